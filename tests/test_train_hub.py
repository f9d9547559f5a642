"""`--push_to_hub` against the loopback fake Hub (tests/fakehub.py): the final model, its card and the discriminator
arrive, checkpoints do not, no uploaded file holds the token, and the uploaded tokenizer loads back."""

import huggingface_hub  # noqa: F401  (imported before the fixture points it at the fake Hub)
import pytest
import torch
import transformers
from train_utils import make_imagefolder, run_in_process, tiny_tokenizer_args

from glotok_hf import GloTokModel

REPO = "tester/glotok-tiny"


def test_push_to_hub_uploads_the_final_model_and_card_without_the_token(fake_hub, tmp_path):
    images = make_imagefolder(tmp_path / "images", per_class=2, size=20)
    out = tmp_path / "glotok-tiny"
    run = run_in_process(tiny_tokenizer_args(images, out, max_train_steps=2, push_to_hub=True, hub_model_id=REPO))
    assert run.repo_id == REPO
    files = fake_hub.files(REPO)
    expected = {"README.md", "config.json", "model.safetensors", "modeling_glotok.py", "configuration_glotok.py",
                "discriminator/config.json", "discriminator/model.safetensors", "reconstructions.png",
                "training_args.json", "logs/metrics.jsonl"}  # fmt: skip
    assert expected <= files.keys()
    assert not [name for name in files if name.startswith(("checkpoint-", ".tmp", "validation/"))]
    assert files["model.safetensors"] == (out / "model.safetensors").read_bytes()
    assert fake_hub.token_leaks() == []
    card = files["README.md"].decode()
    assert f'AutoModel.from_pretrained("{REPO}", trust_remote_code=True)' in card

    pulled = transformers.AutoModel.from_pretrained(REPO)
    local = GloTokModel.from_pretrained(out)
    assert all(torch.equal(v, local.state_dict()[k]) for k, v in pulled.state_dict().items())


def test_a_token_inside_the_folder_blocks_the_upload(fake_hub, tmp_path):
    from glotok_hf.training.publishing import push_folder

    (tmp_path / "notes.txt").write_text(f"oops {fake_hub.token}")
    with pytest.raises(RuntimeError, match="contains the Hub token"):
        push_folder(tmp_path, REPO, token=None)
    assert REPO not in fake_hub.repo_ids()
