"""The loopback fake Hub (`fakehub.py`) against the real clients: transformers / diffusers `push_to_hub` and
`from_pretrained`, huggingface_hub uploads and snapshots, remote code in a child process, errors and isolation."""

import json
import os
import subprocess
import textwrap
from pathlib import Path

import datasets
import diffusers.utils.hub_utils as diffusers_hub_utils
import huggingface_hub
import pytest
import torch
import transformers.utils.hub as transformers_hub
from conftest import BLOCK_GLOTOK_HF, PYTHON, dummy_images
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
from huggingface_hub import CommitOperationDelete, HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from transformers import AutoModel

pytest_plugins = ["fakehub"]  # the `fake_hub` fixture (import other names from fakehub lazily, after registration)


def assert_same_weights(model_a: torch.nn.Module, model_b: torch.nn.Module) -> None:
    state_a, state_b = model_a.state_dict(), model_b.state_dict()
    assert state_a.keys() == state_b.keys()
    for name, tensor in state_a.items():
        torch.testing.assert_close(state_b[name], tensor, rtol=0, atol=0, msg=name)


# ------------------------------------------------------------------------------------------------ transformers
def test_transformers_push_to_hub_then_from_pretrained(fake_hub, tiny_model):
    commit = tiny_model.push_to_hub("tester/tiny", commit_message="Add the tiny tokenizer")

    assert commit.commit_url.startswith(f"{fake_hub.endpoint}/tester/tiny/commit/")
    assert fake_hub.commits("tester/tiny") == ["initial commit", "Add the tiny tokenizer"]
    files = fake_hub.files("tester/tiny")
    assert set(files) == {".gitattributes", "README.md", "config.json", "model.safetensors",
                          "configuration_glotok.py", "modeling_glotok.py", "utils.py"}  # fmt: skip
    assert json.loads(files["config.json"])["auto_map"]["AutoModel"] == "modeling_glotok.GloTokModel"
    assert all(r.authorized for r in fake_hub.requests if r.method == "POST" and "validate-yaml" not in r.path)

    reloaded = AutoModel.from_pretrained("tester/tiny")
    assert type(reloaded) is type(tiny_model)
    assert_same_weights(tiny_model, reloaded)
    assert {"config.json", "model.safetensors"} <= fake_hub.downloaded_files("tester/tiny")
    assert fake_hub.token_leaks() == [] and fake_hub.unhandled == [] and fake_hub.errors == []


REMOTE_CODE_CHILD = BLOCK_GLOTOK_HF + textwrap.dedent(
    """
    import huggingface_hub, torch
    from transformers import AutoModel

    repo_id, ref = sys.argv[1], torch.load(sys.argv[2], weights_only=True)
    assert huggingface_hub.whoami()["name"] == "tester"  # HF_TOKEN reached the fake Hub
    model = AutoModel.from_pretrained(repo_id, trust_remote_code=True).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(ref["images"]).sample, ref["sample"], rtol=0, atol=0)
    print("REMOTE_OK", type(model).__module__)
    """
)


def test_remote_code_loads_from_the_fake_hub_in_a_process_without_the_package(
    fake_hub, tiny_model, tmp_path, subprocess_env
):
    tiny_model.push_to_hub("tester/tiny")
    images = dummy_images()
    with torch.no_grad():
        torch.save({"images": images, "sample": tiny_model(images).sample}, tmp_path / "ref.pt")
    env = fake_hub.env(subprocess_env)
    env.pop("PYTHONPATH", None)

    proc = subprocess.run(
        [PYTHON, "-c", REMOTE_CODE_CHILD, "tester/tiny", str(tmp_path / "ref.pt")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "REMOTE_OK transformers_modules" in proc.stdout
    # transformers fetched the modeling file and, through its relative import, the configuration file.
    assert {"configuration_glotok.py", "modeling_glotok.py", "model.safetensors"} <= fake_hub.downloaded_files(
        "tester/tiny"
    )
    # The child had its own HF_HOME, under the fixture's folder.
    assert env["HF_HOME"].startswith(str(fake_hub.work_dir))
    assert (Path(env["HF_HOME"]) / "hub" / "models--tester--tiny").is_dir()


# ------------------------------------------------------------------------------------------- huggingface_hub
def test_upload_folder_snapshot_download_and_later_commits(fake_hub, tmp_path):
    folder = tmp_path / "upload"
    payload = {
        "README.md": b"# nested\n",
        "weights/model.bin": bytes(range(256)) * 3,
        "weights/shards/part-00001.bin": b"\x00" * 10,
        "weights/shards/part-00002.bin": b"",
        "logs/train/events.txt": b"step 1\n",
    }
    for path, content in payload.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_bytes(content)
    api = HfApi()
    assert api.create_repo("folder").repo_id == "tester/folder"  # no namespace: the token's user
    first = huggingface_hub.upload_folder(repo_id="tester/folder", folder_path=folder, commit_message="first")

    assert {p: c for p, c in fake_hub.files("tester/folder").items() if p != ".gitattributes"} == payload
    assert api.list_repo_files("tester/folder") == sorted([".gitattributes", *payload])
    assert [e.path for e in api.list_repo_tree("tester/folder", path_in_repo="weights")] == [
        "weights/model.bin", "weights/shards"]  # fmt: skip
    snapshot = snapshot_download("tester/folder")
    assert {p: (folder / p).read_bytes() for p in payload} == {
        p: open(f"{snapshot}/{p}", "rb").read() for p in payload
    }

    # Re-uploading unchanged files makes no commit (the fake reports existing blob oids at preupload, as the Hub does).
    huggingface_hub.upload_folder(repo_id="tester/folder", folder_path=folder, commit_message="no-op")
    assert fake_hub.commits("tester/folder") == ["initial commit", "first"]

    api.upload_file(path_or_fileobj=b"step 2\n", path_in_repo="logs/train/events.txt", repo_id="tester/folder")
    api.create_commit(
        "tester/folder",
        operations=[CommitOperationDelete("weights/shards/", is_folder=True), CommitOperationDelete("README.md")],
        commit_message="prune",
    )
    latest = fake_hub.files("tester/folder")
    assert sorted(latest) == [".gitattributes", "logs/train/events.txt", "weights/model.bin"]
    assert latest["logs/train/events.txt"] == b"step 2\n"
    assert len(fake_hub.commits("tester/folder")) == 4

    # The first commit is still downloadable by its oid, and `main` moved on.
    old = snapshot_download("tester/folder", revision=first.oid)
    assert open(f"{old}/weights/shards/part-00001.bin", "rb").read() == b"\x00" * 10
    new = snapshot_download("tester/folder")
    assert not os.path.exists(f"{new}/README.md") and open(f"{new}/logs/train/events.txt").read() == "step 2\n"
    assert fake_hub.unhandled == [] and fake_hub.errors == []


def test_errors_are_the_ones_the_hub_gives(fake_hub):
    api = HfApi()
    fake_hub.upload("tester/there", {"a.txt": "a"})
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("tester/missing")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download("tester/there", "b.txt")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("tester/there", revision="v1.0")
    with pytest.raises(HfHubHTTPError, match="already created") as conflict:
        api.create_repo("tester/there")
    assert conflict.value.response.status_code == 409
    assert api.create_repo("tester/there", exist_ok=True) == f"{fake_hub.endpoint}/tester/there"
    with pytest.raises(HfHubHTTPError) as wrong_token:
        HfApi(token="hf_wrong").create_repo("tester/new")
    assert wrong_token.value.response.status_code == 401 and "tester/new" not in fake_hub.repo_ids()
    with pytest.raises(HfHubHTTPError) as no_token:
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="tester/there", token=False)
    assert no_token.value.response.status_code in (401, 404) and "x.txt" not in fake_hub.files("tester/there")

    api.create_repo("tester/secret", private=True)
    assert api.model_info("tester/secret").private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info("tester/secret")
    assert HfApi(token=False).model_info("tester/there").sha == api.model_info("tester/there").sha

    # Endpoints the fake does not implement answer 404 with a message naming the route, and are listed.
    with pytest.raises(HfHubHTTPError, match="fake Hub has no route for GET /api/models/tester/there/commits/main"):
        api.list_repo_commits("tester/there")
    assert fake_hub.unhandled == ["GET /api/models/tester/there/commits/main"]


def test_token_leak_check_finds_a_leaked_token(fake_hub):
    fake_hub.upload("tester/clean", {"config.json": '{"lr": 0.1}'})
    assert fake_hub.token_leaks() == []
    HfApi().upload_file(
        path_or_fileobj=f"--hub_token {fake_hub.token}\n".encode(),
        path_in_repo="logs/args.txt",
        repo_id="tester/clean",
    )
    leaks = fake_hub.token_leaks()
    assert len(leaks) == 1 and leaks[0].endswith(": logs/args.txt"), leaks
    # The token travels only in the Authorization header, which is never recorded.
    assert all("authorization" not in {k.lower() for k in r.headers} for r in fake_hub.requests)
    assert any(r.authorized for r in fake_hub.requests)


def test_dataset_repo_loads_with_load_dataset(fake_hub):
    huggingface_hub.create_repo("tester/table", repo_type="dataset")
    for split, rows in {"train": "x,y\n1,a\n2,b\n3,c\n", "test": "x,y\n4,d\n"}.items():
        huggingface_hub.upload_file(path_or_fileobj=rows.encode(), path_in_repo=f"data/{split}.csv",
                                    repo_id="tester/table", repo_type="dataset")  # fmt: skip

    table = datasets.load_dataset("tester/table")

    assert table["train"]["x"] == [1, 2, 3] and table["test"]["y"] == ["d"]
    assert table["train"].cache_files[0]["filename"].startswith(str(fake_hub.work_dir))  # not the session's cache
    assert fake_hub.unhandled == [] and fake_hub.errors == []


# ------------------------------------------------------------------------------------------------- diffusers
def tiny_ddpm_pipeline() -> DDPMPipeline:
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 8), norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
    )  # fmt: skip
    return DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=10))


def test_diffusers_pipeline_push_to_hub_then_from_pretrained(fake_hub):
    pipe = tiny_ddpm_pipeline()
    pipe.push_to_hub("tester/pipe")

    files = fake_hub.files("tester/pipe")
    assert {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
            "scheduler/scheduler_config.json", "README.md"} <= set(files)  # fmt: skip
    reloaded = DDPMPipeline.from_pretrained("tester/pipe")
    assert_same_weights(pipe.unet, reloaded.unet)
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(reloaded.scheduler.config) == public(pipe.scheduler.config)
    # diffusers' download path: model_index.json first, then a recursive tree listing to pick the component files.
    tree_listings = [r for r in fake_hub.requests if r.path.startswith("/api/models/tester/pipe/tree/")]
    assert tree_listings and tree_listings[0].query["recursive"] == ["true"]
    assert {"model_index.json", "unet/diffusion_pytorch_model.safetensors"} <= fake_hub.downloaded_files("tester/pipe")
    assert fake_hub.token_leaks() == [] and fake_hub.unhandled == [] and fake_hub.errors == []


# ------------------------------------------------------------------------------------------------- isolation
def test_serve_fake_hub_restores_offline_mode_and_endpoints(tmp_path, tiny_model):
    from fakehub import serve_fake_hub  # the context manager behind the `fake_hub` fixture

    original = (constants.ENDPOINT, constants.HUGGINGFACE_CO_URL_TEMPLATE, constants.HF_HUB_CACHE,
                huggingface_hub.hf_api.api.endpoint, diffusers_hub_utils.HUGGINGFACE_CO_RESOLVE_ENDPOINT,
                os.environ.get("HF_TOKEN"))  # fmt: skip
    assert constants.HF_HUB_OFFLINE is True and diffusers_hub_utils.HF_HUB_OFFLINE is True

    for run in range(2):  # a second server (new port) must not be hit by clients built against the first one
        with serve_fake_hub(tmp_path / str(run)) as hub:
            assert constants.HF_HUB_OFFLINE is False and diffusers_hub_utils.HF_HUB_OFFLINE is False
            assert constants.ENDPOINT == huggingface_hub.hf_api.api.endpoint == hub.endpoint
            assert os.environ["HF_TOKEN"] == hub.token
            tiny_model.push_to_hub("tester/tiny")
            assert "model.safetensors" in hub.files("tester/tiny")
            assert transformers_hub.hf_api().endpoint == hub.endpoint

        assert constants.HF_HUB_OFFLINE is True and diffusers_hub_utils.HF_HUB_OFFLINE is True
        assert original == (constants.ENDPOINT, constants.HUGGINGFACE_CO_URL_TEMPLATE, constants.HF_HUB_CACHE,
                            huggingface_hub.hf_api.api.endpoint, diffusers_hub_utils.HUGGINGFACE_CO_RESOLVE_ENDPOINT,
                            os.environ.get("HF_TOKEN"))  # fmt: skip
        with pytest.raises(OfflineModeIsEnabled):
            huggingface_hub.model_info("tester/tiny")
