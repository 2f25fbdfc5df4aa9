"""The one table of segmentation methods (wsseg.registry): everything that lists methods derives from it."""

from __future__ import annotations

from pathlib import Path

from wsseg.registry import ARTEFACTS, METHODS, NETWORK_METHODS, SEGMENT_METHODS, method_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_method_table_is_the_registry() -> None:
    assert method_table() in README.read_text()


def test_every_row_is_built_by_a_segmenter_and_records_what_it_reads() -> None:
    from wsseg.segmentation.methods import LOADERS, SEGMENTERS

    assert list(METHODS) == [*SEGMENT_METHODS, *NETWORK_METHODS] and "seg" in NETWORK_METHODS
    for info in METHODS.values():
        assert info.fusion in SEGMENTERS and all(artefact.file in LOADERS for artefact in info.artefacts)
        assert (info.threshold is None) == (not info.uses_labels)


def test_segment_json_keeps_the_digest_of_every_trained_file_a_method_reads() -> None:
    from wsseg.outputs import SEGMENT_SHAPING_KEYS

    assert all(artefact.record_key in SEGMENT_SHAPING_KEYS for artefact in ARTEFACTS)
    assert [artefact.file for artefact in METHODS["pipeline-a"].artefacts] == ["misvm.npz"]
    assert all([artefact.file for artefact in METHODS[name].artefacts] == ["affinity.pt"]
               for name in ("cam-rw", "dcsm-rw", "cam-rw-crf", "dcsm-rw-crf"))
