"""Reading and writing files through the studio's API: only uploads, bundled data and allowed folders.

One real studio (`tunesmith webui --allow-dir ALLOWED`, loopback, no login)
and, next to ALLOWED, a folder it must not touch holding a 0600 file with a
secret in it (readable by the studio's own user: only the confinement stands
in the way). Every endpoint that takes a path, a dataset, a model folder, an
output folder or a run id is called the way a script would call it. Run:

    pytest tests/security/test_paths.py
"""

from __future__ import annotations

import json
import os
import uuid

import pytest
from secprobe import SECRET

pytestmark = pytest.mark.slow  # each starts the real studio (tens of seconds on 2 cores)

HI = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


def _refused(event: str, data) -> bool:
    """Refused: an error that names the refusal, and no secret anywhere in the answer."""
    text = json.dumps(data)
    return event == "error" and SECRET not in text


def _outside_refs(w) -> dict[str, str]:
    o, a = w["outside"], w["allowed"]
    return {
        "absolute path": str(w["secret"]),
        "missing file (same answer)": str(o / "nothing-here.jsonl"),
        "../ out of the allowed folder": f"{a}/../outside/secret.jsonl",
        "symlink in the allowed folder": str(a / "link.jsonl"),
        "folder symlink in the allowed folder": str(a / "outlink" / "secret.jsonl"),
        "relative to the studio's cwd": "secret.json",
        "relative ../": "../outside/secret.jsonl",
        "TUNESMITH_HOME's dataset_info.json": str(w["home"] / "dataset_info.json"),
        "uploads/../": str(w["home"] / "uploads" / ".." / "dataset_info.json"),
        "/etc/passwd": "/etc/passwd",
        "~ (home folder)": "~/.bashrc",
        "a folder": str(o),
    }


def test_dataset_preview_refuses_paths_outside(world, api, probes):
    for what, ref in _outside_refs(world).items():
        event, data = api.call("look_selected", Datasets=[ref])
        # The preview never raises: it answers with its markdown. The refusal must name the fix.
        text = json.dumps(data)
        ok = event == "complete" and "--allow-dir" in text and SECRET not in text and "root:" not in text
        probes.refuse(f"Data preview: {what}", ok, text)
    # The same answer for a missing file as for an existing one: no oracle for what exists.
    answers = {api.call("look_selected", Datasets=[str(world["outside"] / n)])[1][1].replace(n, "")
               for n in ("secret.jsonl", "nothing-here.jsonl")}
    probes.refuse("Data preview: existing and missing files answered alike", len(answers) == 1, str(answers))


def test_dataset_preview_still_reads_allowed_and_bundled_data(world, api, probes):
    event, data = api.call("look_selected", Datasets=[str(world["allowed"] / "data.jsonl")])
    probes.works("Data preview: file in an allowed folder", event == "complete" and "Question 3?" in json.dumps(data),
                 json.dumps(data))
    event, data = api.call("look_selected", Datasets=["identity"])
    probes.works("Data preview: bundled dataset", event == "complete" and "Who are you?" in json.dumps(data))


def test_check_data_and_start_refuse_datasets_outside(world, api, probes):
    runs_before = set(os.listdir(world["home"] / "runs"))
    for endpoint in ("check_data", "start_run"):
        for what, ref in list(_outside_refs(world).items())[:6]:
            event, data = api.call(endpoint, Datasets=[ref])
            probes.refuse(f"{endpoint}: dataset {what}", _refused(event, data) and "--allow-dir" in str(data),
                          f"{event} {data}")
        event, data = api.call(endpoint, **{"Separate file to check against (optional)": str(world["secret"])})
        probes.refuse(f"{endpoint}: validation file outside", _refused(event, data) and "data.val_file" in str(data),
                      f"{event} {data}")
        event, data = api.call(endpoint, Model=str(world["outside"] / "model"))
        probes.refuse(f"{endpoint}: model folder outside", _refused(event, data) and "model.name_or_path" in str(data),
                      f"{event} {data}")
    probes.refuse("start_run: no run folder was created", set(os.listdir(world["home"] / "runs")) == runs_before)


def test_check_data_still_reads_an_allowed_file(world, api, probes):
    event, data = api.call("check_data", Datasets=[str(world["allowed"] / "data.jsonl")],
                           Model=str(world["allowed"] / "model"))
    probes.works("Check data: file and model folder in an allowed folder",
                 event == "complete" and "5 rows" in json.dumps(data), f"{event} {data}")


def test_chat_refuses_model_folders_outside(world, api, probes):
    # A fresh session offers no such target: Gradio refuses a value not in the dropdown.
    event, data = api.call("confined_reply", **{"Chat with": str(world["outside"] / "model"),
                                                "Chat": HI})
    probes.refuse("Chat: model folder outside, fresh session", event == "error", str(data))
    # The Model field feeds the Chat list: put the folder there first, in the same session.
    session = uuid.uuid4().hex
    for target in (str(world["outside"] / "model"), f"{world['allowed']}/../outside/model", "/etc"):
        api.call("refresh_targets", session_hash=session, Model=target)
        event, data = api.call("confined_reply", session_hash=session,
                               **{"Chat with": target, "Chat": HI})
        probes.refuse(f"Chat: model folder {target} offered by the Model field", _refused(event, data)
                      and "--allow-dir" in str(data), f"{event} {data}")


def test_chat_with_an_allowed_model_folder(world, api, probes):
    session = uuid.uuid4().hex
    target = str(world["allowed"] / "model")
    api.call("refresh_targets", session_hash=session, Model=target)
    event, data = api.call("confined_reply", session_hash=session,
                           **{"Chat with": target, "Chat": HI, "Longest reply (tokens)": 16})
    probes.works("Chat: model folder in an allowed folder", event == "complete" and data[0][-1]["role"] == "assistant",
                 f"{event} {data}")


def test_export_refuses_output_folders_outside(world, api, probes):
    session = uuid.uuid4().hex
    api.call("refresh_runs", session_hash=session)
    targets = {"absolute": world["outside"] / "exported", "../": f"{world['allowed']}/../outside/exported2",
               "symlinked folder": world["allowed"] / "outlink" / "exported3", "home": "~/exported4",
               "TUNESMITH_HOME": world["home"]}
    for what, out in targets.items():
        event, data = api.call("do_export", session_hash=session, Run=world["run"],
                               **{"Output folder on the server (optional)": str(out)})
        probes.refuse(f"Export: output folder outside ({what})", _refused(event, data) and "--allow-dir" in str(data),
                      f"{event} {data}")
    probes.refuse("Export: nothing written outside", sorted(os.listdir(world["outside"])) ==
                  ["model", "secret.jsonl", "secret.txt"], str(os.listdir(world["outside"])))


def test_export_into_an_allowed_folder(world, api, probes):
    session = uuid.uuid4().hex
    api.call("refresh_runs", session_hash=session)
    out = world["allowed"] / "exported"
    event, data = api.call("do_export", session_hash=session, Run=world["run"],
                           **{"Output folder on the server (optional)": str(out)})
    probes.works("Export: into an allowed folder", event == "complete" and (out / "adapter_config.json").exists(),
                 f"{event} {data}")


def test_upload_components_take_only_uploaded_files(world, api, probes):
    for endpoint in ("shown_upload", "register_clicked"):
        for ref in (str(world["secret"]), "/etc/passwd"):
            file = {"path": ref, "meta": {"_type": "gradio.FileData"}, "orig_name": "x.jsonl"}
            event, data = api.call(endpoint, **{"Add your own dataset": file})
            probes.refuse(f"{endpoint}: a file path that was not uploaded ({ref})", _refused(event, data),
                          f"{event} {data}")


def test_file_route_serves_no_local_files(world, probes):
    with world["studio"].client() as c:
        for ref in (str(world["secret"]), "/etc/passwd", str(world["home"] / "dataset_info.json"),
                    str(world["allowed"] / "data.jsonl")):
            r = c.get(f"gradio_api/file={ref}")
            probes.refuse(f"GET /gradio_api/file={ref}", r.status_code in (403, 404) and SECRET not in r.text
                          and "Question" not in r.text, f"{r.status_code} {r.text[:200]}")


def test_run_ids_are_not_paths(world, api, probes):
    victim = world["outside"] / "victim"
    victim.mkdir(exist_ok=True)
    session = uuid.uuid4().hex
    api.call("refresh", session_hash=session)
    for endpoint in ("do_delete", "reuse_settings", "resume_run", "picked"):
        for ref in ("../../outside/victim", str(victim)):
            event, data = api.call(endpoint, session_hash=session, Run=ref)
            probes.refuse(f"{endpoint}: run id {ref}", event == "error" and victim.exists(), f"{event} {data}")


def test_upload_then_register_keeps_names_inside_uploads(world, api, probes):
    rows = "".join(json.dumps({"instruction": f"Up {i}?", "output": f"Down {i}."}) + "\n" for i in range(3))
    r = api.client.post("gradio_api/upload", files={"files": ("mine.jsonl", rows.encode())})
    uploaded = {"path": r.json()[0], "meta": {"_type": "gradio.FileData"}, "orig_name": "mine.jsonl"}
    for name in ("../../outside/pwn", "../pwn", "/tmp/pwn", ".hidden"):
        event, data = api.call("register_clicked", **{"Add your own dataset": uploaded, "Name": name})
        probes.refuse(f"register an upload as {name!r}", event == "error" and "dataset name" in str(data),
                      f"{event} {data}")
    probes.refuse("registering wrote nothing outside", "pwn" not in os.listdir(world["outside"]))
    event, data = api.call("shown_upload", **{"Add your own dataset": uploaded})
    probes.works("a dropped file is shown", event == "complete" and "Up 1?" in json.dumps(data), f"{event} {data}")
    event, data = api.call("register_clicked", **{"Add your own dataset": uploaded, "Name": "mine"})
    probes.works("a dropped file is registered under uploads", event == "complete"
                 and (world["home"] / "uploads" / "mine").is_dir(), f"{event} {data}")
    event, data = api.call("look_selected", Datasets=["mine"])
    probes.works("the registered upload is previewed by name", "Down 2." in json.dumps(data), json.dumps(data))
