"""The sweep identity on ``--resume`` (``raybench.tune.claim``): a field added to the Spec later
does not lock out sweeps started before it existed; another spec is still refused."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from raybench.config import load_spec, to_dict, with_absolute_paths
from raybench.errors import RaybenchError
from raybench.store import ResultStore
from raybench.tune.claim import CLAIM_FILE, claim_sweep, read_claim, spec_hash

REPO = Path(__file__).resolve().parents[2]


def _spec(root: Path, *sets: str):
    return with_absolute_paths(load_spec(REPO / "jobs" / "smoke.yaml",
                                         [f"results={root}", "name=old", *sets]))


def _started_before_max_retries(store: ResultStore, root: Path, legacy_claim: bool) -> str:
    """The files a driver whose Spec had no ``sweep.max_retries`` left: its ``spec.yaml``
    (``yaml.safe_dump`` of the spec, as ``dump_yaml`` writes it) and its claim keyed by the
    sha256 of that spec, its root blanked (or, for older claims, with the root)."""
    doc: dict[str, Any] = to_dict(_spec(root))
    del doc["sweep"]["max_retries"]
    text = yaml.safe_dump(doc, sort_keys=False)
    keyed = text if legacy_claim else yaml.safe_dump({**doc, "results": ""}, sort_keys=False)
    claim = {"spec_sha256": hashlib.sha256(keyed.encode()).hexdigest(), "host": "h", "pid": 1}
    assert store.create_file("old", CLAIM_FILE, json.dumps(claim).encode())
    store.write_spec("old", text)
    return claim["spec_sha256"]


@pytest.mark.parametrize("legacy_claim", [False, True])
def test_a_sweep_saved_before_a_new_field_resumes_with_its_default(tmp_path: Path,
                                                                    legacy_claim: bool) -> None:
    store = ResultStore(str(tmp_path))
    old_hash = _started_before_max_retries(store, tmp_path, legacy_claim)
    spec = _spec(tmp_path)
    assert spec.sweep.max_retries == 2 and old_hash != spec_hash(spec)
    assert "max_retries" not in (store.read_spec("old") or "")
    assert claim_sweep(store, spec, resume=True, overwrite=False) is True
    assert (read_claim(store, "old") or {})["spec_sha256"] == spec_hash(spec)  # taken over


def test_a_new_field_set_away_from_its_default_is_another_spec(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    _started_before_max_retries(store, tmp_path, legacy_claim=False)
    for sets in (["sweep.max_retries=5"], ["train.epochs=9"]):
        with pytest.raises(RaybenchError) as err:
            claim_sweep(store, _spec(tmp_path, *sets), resume=True, overwrite=False)
        assert str(err.value) == (f"sweep 'old' at {tmp_path / 'old'} was started with another "
                                  "spec; resume it with the same spec and --set values")
    assert "max_retries" not in (store.read_spec("old") or "")  # nothing rewritten


def test_a_saved_key_that_no_longer_exists_is_another_spec(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    _started_before_max_retries(store, tmp_path, legacy_claim=False)
    doc = yaml.safe_load(store.read_spec("old") or "")
    doc["train"]["retired_knob"] = 1
    store.write_spec("old", yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(RaybenchError, match="was started with another spec"):
        claim_sweep(store, _spec(tmp_path), resume=True, overwrite=False)


def test_a_claim_of_another_spec_is_refused_even_when_spec_yaml_matches(tmp_path: Path) -> None:
    store = ResultStore(str(tmp_path))
    _started_before_max_retries(store, tmp_path, legacy_claim=False)
    other = {"spec_sha256": spec_hash(_spec(tmp_path, "train.epochs=9")), "host": "h", "pid": 1}
    store.replace_file("old", CLAIM_FILE, json.dumps(other).encode())  # e.g. an --overwrite
    with pytest.raises(RaybenchError, match="is claimed by h pid 1 .* with another spec"):
        claim_sweep(store, _spec(tmp_path), resume=True, overwrite=False)
