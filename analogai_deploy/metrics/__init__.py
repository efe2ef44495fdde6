"""What a number on a certificate means: the metric definitions, scoring, statistics and times.

    accuracy               top-1 accuracy against labels (classifiers on labelled data: images, text:FILE with labels)
    agreement              top-1 agreement with the digital model (classifiers, no labels needed; models that
                           score every token (masked-lm, token-classification): per real token position)
    cosine                 cosine similarity of the outputs to the digital model's (encoders such as the MiniLM;
                           sentence embeddings = attention-masked mean of the last hidden state)
    next_token_agreement   causal LMs: share of (non-padding) positions whose greedy next token equals the
                           digital model's
    perplexity_ratio       causal LMs: perplexity of the analog model on the text / the digital model's
                           (1.0 = as good as digital; lower is better)

Every metric says which way is better (`Metric.higher_is_better`), so a gate's "drop" is the move in the
bad direction on whichever metric a certificate carries. The evaluation data itself is data.eval_set.EvalSet.
"""
from .definitions import METRIC_CHOICES, METRICS, Metric, Scored, metric_info, resolve_metric
from .scoring import batch_score, pooled, primary_output, run, score
from .statistics import half_width, normalised, stats
from .times import DEFAULT_TIMES, parse_time, parse_times

__all__ = ["METRIC_CHOICES", "METRICS", "Metric", "Scored", "metric_info", "resolve_metric",
           "batch_score", "pooled", "primary_output", "run", "score", "half_width", "normalised", "stats",
           "DEFAULT_TIMES", "parse_time", "parse_times"]
