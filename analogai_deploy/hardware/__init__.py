"""Device models and noise maths: what an analog tile does to a weight and a signal, below every stage."""
