"""Every path-taking entry of the job protocol, against a real worker, with hostile paths.

Each case asserts the exact outcome: the refusal's code on the field that took the
path. After every batch the same channel must still answer (no case may drop it).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import stat
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.labels import write_labels
from tests.security.conftest import Layout, RawPeer

pytestmark = pytest.mark.slow

ACCESS_DENIED, INVALID_PATH = "ACCESS_DENIED", "INVALID_PATH"

#: name -> (path, code for absolute-only fields, code where relative paths are allowed)
Payload = tuple[Callable[[Layout], str], str, str]
PAYLOADS: dict[str, Payload] = {
    "absolute-outside": (lambda t: str(t.outside / "secret.slp"), ACCESS_DENIED, ACCESS_DENIED),
    "dotdot": (lambda t: f"{t.data}/../outside/secret.slp", ACCESS_DENIED, ACCESS_DENIED),
    "symlink-out": (lambda t: f"{t.data}/link_out/secret.slp", ACCESS_DENIED, ACCESS_DENIED),
    "etc-passwd": (lambda t: "/etc/passwd", ACCESS_DENIED, ACCESS_DENIED),
    "worker-state": (lambda t: str(t.state / "jobs.sqlite3"), ACCESS_DENIED, ACCESS_DENIED),
    "other-users-upload": (
        lambda t: str(t.uploads / "bob" / "x.slp"),
        ACCESS_DENIED,
        ACCESS_DENIED,
    ),
    "nul": (lambda t: f"{t.data}/a\x00b.slp", INVALID_PATH, INVALID_PATH),
    "tilde": (lambda t: "~/labels.slp", INVALID_PATH, INVALID_PATH),
    "relative-escape": (lambda t: "../../outside/secret.slp", INVALID_PATH, ACCESS_DENIED),
    "long-name": (lambda t: f"{t.data}/{'a' * 300}.slp", INVALID_PATH, INVALID_PATH),
}

CONFIG_KEYS = {
    # dotted key -> the field the worker names in its refusal
    "data_config.train_labels_path": "labels_path",
    "data_config.val_labels_path": "val_labels_path",
    "data_config.test_file_path": "config[0].",
    "model_config.pretrained_backbone_weights": "config[0].",
    "model_config.pretrained_head_weights": "config[0].",
    "trainer_config.resume_ckpt_path": "config[0].",
}
CONFIG_KEYS = {k: v + k if v.endswith(".") else v for k, v in CONFIG_KEYS.items()}


def _fixture_files(layout: Layout) -> dict[str, str]:
    data = layout.data
    (data / "configs").mkdir(exist_ok=True)
    write_labels(data / "labels.slp")
    write_labels(data / "in.slp")
    (data / "model").mkdir(exist_ok=True)
    (data / "model" / "training_config.yaml").write_text("x: 1\n")
    (data / "model" / "best.ckpt").write_bytes(b"x")
    config = {
        "data_config": {"train_labels_path": ["../labels.slp"]},
        "model_config": {},
        "trainer_config": {"max_epochs": 1},
    }
    (data / "configs" / "ok.yaml").write_text(yaml.safe_dump(config))
    return {
        "config": str(data / "configs" / "ok.yaml"),
        "labels": str(data / "labels.slp"),
        "data": str(data / "in.slp"),
        "model": str(data / "model"),
    }


def _spec_cases(layout: Layout) -> list[tuple[str, str, dict[str, Any], str, str]]:
    """(payload, entry, spec, field, expected code) for every job field and config key."""
    ok = _fixture_files(layout)
    hostile = layout.data / "hostile"
    hostile.mkdir(exist_ok=True)
    cases = []
    for name, (make, absolute_code, relative_code) in PAYLOADS.items():
        path = make(layout)
        train = {"kind": "train", "config_paths": [ok["config"]]}
        track = {"kind": "track", "data_path": ok["data"], "model_paths": [ok["model"]]}
        for entry, spec, field in (
            ("config_paths", {**train, "config_paths": [path]}, "config_path"),
            ("labels_path", {**train, "labels_path": path}, "labels_path"),
            ("val_labels_path", {**train, "val_labels_path": path}, "val_labels_path"),
            ("resume_ckpt_path", {**train, "resume_ckpt_path": path}, "resume_ckpt_path"),
            ("data_path", {**track, "data_path": path}, "data_path"),
            ("model_paths", {**track, "model_paths": [path]}, "model_paths"),
        ):
            cases.append((name, entry, spec, field, absolute_code))
        cases.append(
            ("" + name, "output_path", {**track, "output_path": path}, "output_path", relative_code)
        )
        for key, field in CONFIG_KEYS.items():
            section, leaf = key.split(".")
            value: Any = [path] if leaf.endswith("labels_path") else path
            config: dict[str, Any] = {"data_config": {}, "model_config": {}, "trainer_config": {}}
            if leaf != "train_labels_path":
                config["data_config"]["train_labels_path"] = ["../labels.slp"]
            config[section][leaf] = value
            file = hostile / f"{name}-{leaf}.yaml"
            file.write_text(yaml.safe_dump(config), encoding="utf-8")
            cases.append((name, key, {**train, "config_paths": [str(file)]}, field, relative_code))
    return cases


async def test_every_job_field_and_config_key_refuses_hostile_paths(
    peer: RawPeer, layout: Layout
) -> None:
    cases = _spec_cases(layout)
    wrong: list[str] = []
    by_code: Counter[str] = Counter()
    for index, (name, entry, spec, field, code) in enumerate(cases):
        reply = await peer.request(
            {"type": "JOB_SUBMIT", "request_id": f"t{index}", "spec": spec},
            lambda m, i=index: m.get("request_id") == f"t{i}",
        )
        if reply["type"] != "JOB_REJECTED":
            wrong.append(f"{name} in {entry}: {reply['type']} (job ran?)")
            continue
        codes = {e["code"] for e in reply["errors"] if e["field"] == field}
        if codes != {code}:
            got = [(e["field"], e["code"]) for e in reply["errors"]]
            wrong.append(f"{name} in {entry}: wanted {field}={code}, got {got}")
        by_code[code] += 1
    assert len(cases) >= 100
    assert wrong == [], "\n".join(wrong)
    pong = await peer.request({"type": "PING", "nonce": "after"}, lambda m: m["type"] == "PONG")
    assert pong["nonce"] == "after"
    print(f"job fields and config keys: {len(cases)} cases, {dict(by_code)}")


async def test_file_service_and_downloads_refuse_hostile_paths(
    peer: RawPeer, layout: Layout
) -> None:
    wrong: list[str] = []
    count = 0
    for name, (make, absolute_code, _relative) in PAYLOADS.items():
        path = make(layout)
        requests: list[dict[str, Any]] = [
            {"type": "FS_LIST", "path": path},
            {"type": "FS_STAT", "path": path},
            {"type": "FS_FIND", "query": "secret.slp", "under": path},
            {"type": "DOWNLOAD", "path": path},
        ]
        for message in requests:
            count += 1
            rid = f"f{count}"
            reply = await peer.request(
                {**message, "request_id": rid}, lambda m, rid=rid: m.get("request_id") == rid
            )
            if reply["type"] != "ERROR" or reply["code"] != absolute_code:
                wrong.append(f"{name} in {message['type']}: {reply['type']} {reply.get('code')}")
            elif "SECRET" in json.dumps(reply):
                wrong.append(f"{name} in {message['type']}: the reply holds the secret")
    assert count >= 40
    assert wrong == [], "\n".join(wrong)
    # Inside the mount, the same requests get correct answers.
    listed = await peer.request(
        {"type": "FS_LIST", "request_id": "in", "path": str(layout.data)},
        lambda m: m.get("request_id") == "in",
    )
    names = {e["name"] for e in listed["entries"]}
    assert "public.txt" in names and listed["type"] == "FS_LIST_REPLY"


def _zip(entries: list[tuple[str, bytes, int | None]]) -> bytes:
    """A zip whose members are written raw (names as given, optional mode bits)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as archive:
        warnings.simplefilter("ignore")  # duplicate names are the point
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            archive.writestr(info, data)
    return buffer.getvalue()


async def _upload(peer: RawPeer, upload_id: str, name: str, data: bytes, unpack: bool) -> dict:
    begin = {
        "type": "UPLOAD_BEGIN",
        "upload_id": upload_id,
        "name": name,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "unpack": unpack,
    }
    reply = await peer.request(begin, lambda m: m["type"] in ("UPLOAD_ACK", "ERROR"))
    if reply["type"] == "ERROR":
        return reply
    await peer.send(
        {
            "type": "UPLOAD_CHUNK",
            "upload_id": upload_id,
            "offset": 0,
            "data": base64.b64encode(data).decode(),
        }
    )
    return await peer.request(
        {"type": "UPLOAD_END", "upload_id": upload_id},
        lambda m: m["type"] in ("UPLOAD_DONE", "ERROR"),
    )


async def test_upload_names_ids_and_zip_members(peer: RawPeer, layout: Layout) -> None:
    before = {p for p in layout.root.rglob("*")}
    cases: list[tuple[str, str, str, bytes, bool, str]] = [
        ("id-traversal", "./../../../../ab", "a.slp", b"x", False, "INVALID_MESSAGE"),
        ("id-slash", "a/b", "a.slp", b"x", False, "INVALID_MESSAGE"),
        ("name-dotdot", "u1", "../evil.slp", b"x", False, "INVALID_MESSAGE"),
        ("name-absolute", "u2", "/tmp/evil.slp", b"x", False, "INVALID_MESSAGE"),
        ("name-hidden", "u3", ".bashrc", b"x", False, "INVALID_MESSAGE"),
        ("name-nul", "u4", "a\x00.slp", b"x", False, "INVALID_MESSAGE"),
        ("zip-dotdot", "z1", "p.zip", _zip([("../evil.txt", b"x", None)]), True, "INVALID_ZIP"),
        ("zip-absolute", "z2", "p.zip", _zip([("/tmp/evil.txt", b"x", None)]), True, "INVALID_ZIP"),
        (
            "zip-symlink",
            "z3",
            "p.zip",
            _zip([("link", b"/etc/passwd", stat.S_IFLNK | 0o777)]),
            True,
            "INVALID_ZIP",
        ),
        (
            "zip-duplicate",
            "z4",
            "p.zip",
            _zip([("a.txt", b"1", None), ("a.txt", b"2", None)]),
            True,
            "INVALID_ZIP",
        ),
        ("zip-dot", "z5", "p.zip", _zip([(".", b"x", None)]), True, "INVALID_ZIP"),
        ("zip-backslash", "z6", "p.zip", _zip([("..\\evil.txt", b"x", None)]), True, "INVALID_ZIP"),
        ("not-a-zip", "z7", "p.zip", b"PK\x03\x04 not really", True, "INVALID_ZIP"),
    ]
    wrong = []
    for name, upload_id, file_name, data, unpack, code in cases:
        reply = await _upload(peer, upload_id, file_name, data, unpack)
        if reply["type"] != "ERROR" or reply["code"] != code:
            wrong.append(f"{name}: {reply['type']} {reply.get('code')}")
    assert wrong == [], "\n".join(wrong)
    created = {p for p in layout.root.rglob("*")} - before
    # Nothing landed outside the user's own upload folder, and nothing of a refused zip.
    assert all(p.is_relative_to(layout.uploads / "alice") for p in created), created
    assert not any("evil" in p.name for p in created), created
    assert not any(p.name.endswith(".zip") for p in created), created
    good = await _upload(peer, "ok1", "fine.zip", _zip([("a/b.txt", b"ok", None)]), True)
    assert good["type"] == "UPLOAD_DONE" and good["path"].startswith(str(layout.uploads / "alice"))
