"""The package: a folder in the Hugging Face layout that every stage reads and writes (the record).

    format.py      the file names, config.json read in either layout, and `Package` with its typed view
                   (`Package.record`: tasks.Record)
    integrity.py   every file bound by its sha256, the safetensors structure, the certificate's binding
    storage.py     atomic replacement of a package folder (swap, sync, umask)
    writer.py      what may be replaced (`check_output`) and `write`
    build.py       the analog-aware model a record describes (`load`), and a distilled package's reference
    card.py        the model card (README.md)

No pickle anywhere. Every write builds the new folder beside the old one and swaps it in, so a crash
leaves either the old package or the complete new one. config.json records every file's sha256 (`files`);
loading checks each one, and a certificate binds the tokenizer it measured with.
"""
from .build import load, load_reference
from .format import (CARD, CERTIFICATE, CONFIG, FORMAT, FORMAT_VERSION, RECORD_KEY, REFERENCE, SECTIONS, WEIGHTS,
                     ZOO_FORMAT, ZOO_INDEX, Package, foreign_entries, hf_native, in_zoo, is_package, read_config,
                     read_json, read_record, safe_name, section, unlisted_files)
from .integrity import (MODEL_KEYS, check_certificate_binding, check_files, check_safetensors,
                        measured_files, model_sections, model_sha256, recorded_files, unbound_files, verify)
from .writer import check_output, flat_metadata, migrate, write

__all__ = ["load", "load_reference", "CARD", "CERTIFICATE", "CONFIG", "FORMAT", "FORMAT_VERSION", "RECORD_KEY",
           "REFERENCE", "SECTIONS", "WEIGHTS", "ZOO_FORMAT", "ZOO_INDEX", "Package", "foreign_entries", "hf_native",
           "in_zoo", "is_package", "read_config",
           "read_json", "read_record", "safe_name", "section", "unlisted_files", "MODEL_KEYS",
           "check_certificate_binding", "check_files", "check_safetensors", "measured_files", "model_sections",
           "model_sha256", "recorded_files", "unbound_files", "verify", "check_output", "flat_metadata", "migrate",
           "write"]
