"""Loss terms: analytic known answers for every term (signs, argument order, beta placement), the adaptive GAN weight,
the optional regularisers, and the combined GloTokObjective end to end on the tiny tokenizer."""

import doctest
import json
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import dummy_images, tiny_glotok_model
from losses_utils import CountingModule, MeanAbsoluteDistance, tiny_discriminator

import glotok_hf.losses.objective
import glotok_hf.modeling_glotok as modeling
from glotok_hf.losses import (
    GENERATOR_TERMS,
    GloTokLossConfig,
    GloTokObjective,
    adaptive_generator_weight,
    discriminator_loss,
    disentanglement_loss,
    entropy_loss,
    generator_adversarial_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    histogram_relation_loss,
    non_saturating_discriminator_loss,
    non_saturating_generator_loss,
    reconstruction_loss,
    residual_loss,
    soft_cosine_histogram,
    vector_quantization_loss,
)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def uniform_teacher(num_bins: int = 40) -> torch.Tensor:
    return torch.full((num_bins,), 1.0 / num_bins)


def quiet_objective(teacher=None, perceptual=None, **config) -> GloTokObjective:
    """An objective with the given config; perceptual/histogram default to off so no warning is emitted."""
    config.setdefault("perceptual_weight", 1.0 if perceptual is not None else 0.0)
    config.setdefault("histogram_weight", 0.01 if teacher is not None else 0.0)
    return GloTokObjective(GloTokLossConfig(**config), teacher_histogram=teacher, perceptual=perceptual)


def codebook_kwargs(model) -> dict:
    return {
        "semantic_codebook": model.semantic.quantizer.embedding.weight,
        "visual_codebook": model.visual.quantizer.embedding.weight,
        "last_layer": model.get_last_layer(),
    }


# ------------------------------------------------------------------------------------------ model-side re-exports
def test_vq_and_residual_losses_are_the_modeling_functions():
    assert vector_quantization_loss is modeling.vector_quantization_loss
    assert residual_loss is modeling.residual_loss


def test_beta_weighs_the_commitment_term_whose_gradient_reaches_the_encoder():
    """z = 0, z_q = 2, beta = 0.1, one element: codebook = (2-0)^2 = 4 (d/dz_q = 4, nothing on z);
    commitment = 0.1 * (0-2)^2 = 0.4 (d/dz = 0.1 * 2 * (0-2) = -0.4, nothing on z_q). diffusers' legacy default puts
    beta on the codebook term instead, which would give codebook 0.4 and commitment 4."""
    z = torch.zeros(1, 1, 1, 1, requires_grad=True)
    zq = torch.full((1, 1, 1, 1), 2.0, requires_grad=True)
    terms = vector_quantization_loss(z, zq, beta=0.1)
    assert terms["codebook_loss"].item() == pytest.approx(4.0)
    assert terms["commitment_loss"].item() == pytest.approx(0.4)
    (codebook_grad_z,) = torch.autograd.grad(terms["codebook_loss"], z, allow_unused=True, retain_graph=True)
    assert codebook_grad_z is None or codebook_grad_z.abs().sum() == 0
    grad_z, grad_zq = torch.autograd.grad(terms["commitment_loss"], (z, zq), allow_unused=True)
    assert grad_z.item() == pytest.approx(-0.4) and (grad_zq is None or grad_zq.abs().sum() == 0)


# ------------------------------------------------------------------------------------------------- reconstruction
def test_reconstruction_l2_and_l1_known_values():
    target = torch.zeros(1, 1, 1, 2)
    reconstruction = torch.tensor([[[[1.0, -3.0]]]])
    assert reconstruction_loss(reconstruction, target).item() == pytest.approx(5.0)  # (1 + 9) / 2
    assert reconstruction_loss(reconstruction, target, kind="l1").item() == pytest.approx(2.0)  # (1 + 3) / 2
    assert reconstruction_loss(reconstruction.bfloat16(), target.bfloat16()).dtype == torch.float32


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        (
            (torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)),
            {"kind": "l3"},
            KeyError,
            "l3",
        ),  # the config checks kinds
        ((torch.zeros(1, 3, 4, 4), torch.zeros(3, 4, 4)), {}, ValueError, "shapes differ"),
        ((torch.zeros(2, 3, 4, 4), torch.zeros(1, 3, 4, 4)), {}, ValueError, "shapes differ"),  # no broadcasting
    ],
)
def test_reconstruction_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        reconstruction_loss(*args, **kwargs)


# ------------------------------------------------------------------------------------------------------------ GAN
REAL = torch.tensor([2.0, 0.5, -1.0])
FAKE = torch.tensor([-2.0, 0.0, 1.0])


def test_hinge_discriminator_known_answer():
    terms = hinge_discriminator_loss(logits_real=REAL, logits_fake=FAKE)
    # relu(1 - real) = [0, 0.5, 2] -> 2.5/3; relu(1 + fake) = [0, 1, 2] -> 1
    assert terms["real_loss"].item() == pytest.approx(2.5 / 3)
    assert terms["fake_loss"].item() == pytest.approx(1.0)
    assert terms["loss"].item() == pytest.approx(0.5 * (2.5 / 3 + 1.0))
    swapped = hinge_discriminator_loss(logits_real=FAKE, logits_fake=REAL)["loss"]
    # relu(1 - [-2, 0, 1]) = [3, 1, 0] and relu(1 + [2, 0.5, -1]) = [3, 1.5, 0]: a different number, order matters
    assert swapped.item() == pytest.approx(0.5 * (4 / 3 + 4.5 / 3))


def test_non_saturating_discriminator_known_answer_and_bce_order():
    terms = non_saturating_discriminator_loss(logits_real=REAL, logits_fake=FAKE)
    real = sum(softplus(-x) for x in REAL.tolist()) / 3  # -log sigmoid(real): target 1
    fake = sum(softplus(x) for x in FAKE.tolist()) / 3  # -log(1 - sigmoid(fake)): target 0
    assert terms["real_loss"].item() == pytest.approx(real, rel=1e-6)
    assert terms["fake_loss"].item() == pytest.approx(fake, rel=1e-6)
    assert terms["loss"].item() == pytest.approx(0.5 * (real + fake), rel=1e-6)
    # the same numbers from BCE with logits as *input* and the labels as *target* (LlamaGen#84 swapped these)
    bce_real = F.binary_cross_entropy_with_logits(REAL, torch.ones(3))
    bce_fake = F.binary_cross_entropy_with_logits(FAKE, torch.zeros(3))
    torch.testing.assert_close(terms["loss"], 0.5 * (bce_real + bce_fake))
    swapped_args = F.binary_cross_entropy_with_logits(torch.ones(3), REAL)
    assert not torch.allclose(terms["real_loss"], swapped_args)


def test_generator_losses_known_answers():
    assert hinge_generator_loss(logits_fake=FAKE).item() == pytest.approx(1 / 3)  # -mean([-2, 0, 1])
    expected = sum(softplus(-x) for x in FAKE.tolist()) / 3  # BCE(fake, 1)
    assert non_saturating_generator_loss(logits_fake=FAKE).item() == pytest.approx(expected, rel=1e-6)
    torch.testing.assert_close(
        non_saturating_generator_loss(logits_fake=FAKE), F.binary_cross_entropy_with_logits(FAKE, torch.ones(3))
    )
    assert generator_adversarial_loss("hinge", logits_fake=FAKE) == hinge_generator_loss(logits_fake=FAKE)


@pytest.mark.parametrize("kind", ["hinge", "non_saturating"])
def test_gradient_signs(kind):
    """The discriminator lowers its loss by raising real logits and lowering fake ones; the generator by raising the
    fake logits. Checked on logits inside the hinge margin, where every gradient is non-zero."""
    real = torch.tensor([0.3, -0.4], requires_grad=True)
    fake = torch.tensor([0.2, -0.5], requires_grad=True)
    d_real, d_fake = torch.autograd.grad(
        discriminator_loss(kind, logits_real=real, logits_fake=fake)["loss"], (real, fake)
    )
    assert (d_real < 0).all() and (d_fake > 0).all()
    (g_fake,) = torch.autograd.grad(generator_adversarial_loss(kind, logits_fake=fake), fake)
    assert (g_fake < 0).all()


def test_gan_logits_are_keyword_only():
    with pytest.raises(TypeError):
        hinge_discriminator_loss(REAL, FAKE)
    with pytest.raises(TypeError):
        non_saturating_discriminator_loss(REAL, FAKE)
    with pytest.raises(TypeError):
        hinge_generator_loss(FAKE)
    with pytest.raises(ValueError, match="hinge"):
        discriminator_loss("wasserstein", logits_real=REAL, logits_fake=FAKE)


@pytest.mark.parametrize("kind", ["hinge", "non_saturating"])
def test_discriminator_minimising_its_loss_separates_real_from_fake(kind, images):
    discriminator = tiny_discriminator()
    fake = dummy_images(seed=1).mul(0.2)  # low-contrast "reconstructions"
    optimizer = torch.optim.Adam(discriminator.parameters(), lr=1e-3)
    with torch.no_grad():
        before_real, before_fake = discriminator(images).mean(), discriminator(fake).mean()
    for _ in range(8):
        loss = discriminator_loss(kind, logits_real=discriminator(images), logits_fake=discriminator(fake))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after_real, after_fake = discriminator(images).mean(), discriminator(fake).mean()
    assert after_real > before_real and after_fake < before_fake


# ------------------------------------------------------------------------------------------------ adaptive weight
def test_adaptive_weight_known_answer_on_a_linear_last_layer():
    """last layer w (2,); nll = 3 w.a with a = (3, 4) -> ||grad|| = 15; g = -w.b with b = (0, 2) -> ||grad|| = 2."""
    w = torch.tensor([0.5, -1.0], requires_grad=True)
    nll = 3 * (w * torch.tensor([3.0, 4.0])).sum()
    g = -(w * torch.tensor([0.0, 2.0])).sum()
    weight = adaptive_generator_weight(nll, g, w)
    assert weight.item() == pytest.approx(15 / (2 + 1e-4), rel=1e-6)
    assert not weight.requires_grad and weight.dtype == torch.float32
    assert adaptive_generator_weight(nll, g, w, max_weight=5.0).item() == 5.0  # clamped
    nll.backward()  # graphs were retained
    assert w.grad is not None


def test_adaptive_weight_is_fp32_for_bf16_layers_and_zero_without_gradients():
    w = torch.tensor([1.0, 2.0], dtype=torch.bfloat16, requires_grad=True)
    nll, g = (w * w).sum(), -w.sum()
    assert adaptive_generator_weight(nll, g, w).dtype == torch.float32
    with torch.no_grad():
        nll, g = (w * w).sum(), -w.sum()
        assert adaptive_generator_weight(nll, g, w).item() == 0.0


def test_adaptive_weight_rejects_an_unrelated_last_layer():
    w, other = torch.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="not have been used in the graph"):
        adaptive_generator_weight((w * 2).sum(), -w.sum(), other)


# ----------------------------------------------------------------------------------------------------- regularisers
def test_entropy_loss_known_answers():
    codebook = torch.eye(4)  # 4 orthonormal codes; distances between distinct codes are 2
    one_each = codebook.clone()  # every latent sits on a different code: confident and uniform usage
    terms = entropy_loss(one_each, codebook, temperature=0.01)
    assert terms["sample_entropy"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["average_entropy"].item() == pytest.approx(math.log(4), abs=1e-6)
    assert terms["loss"].item() == pytest.approx(-math.log(4), abs=1e-6)  # the minimum
    collapsed = codebook[[0, 0, 0, 0]]  # confident but one code for everything
    assert entropy_loss(collapsed, codebook)["loss"].item() == pytest.approx(0.0, abs=1e-6)
    uniform = entropy_loss(torch.randn(5, 4), torch.ones(3, 4))  # identical codes: uniform assignments
    assert uniform["sample_entropy"].item() == pytest.approx(math.log(3), abs=1e-6)
    assert uniform["loss"].item() == pytest.approx(0.0, abs=1e-6)


def test_entropy_loss_matches_the_distance_formula_and_accepts_feature_maps():
    g = torch.Generator().manual_seed(0)
    latents, codebook = torch.randn(2, 3, 2, 2, generator=g), torch.randn(6, 3, generator=g)
    flat = latents.permute(0, 2, 3, 1).reshape(-1, 3).double()
    probs = torch.softmax(-torch.cdist(flat, codebook.double()).pow(2) / 0.5, dim=-1)
    sample = -(probs * probs.log()).sum(-1).mean()
    average = probs.mean(0)
    expected = sample + (average * average.log()).sum()
    assert entropy_loss(latents, codebook, temperature=0.5)["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    normalised = entropy_loss(latents, codebook, 0.5, l2_normalize=True)["loss"]
    reference = entropy_loss(F.normalize(latents, dim=1), F.normalize(codebook, dim=1), 0.5)["loss"]
    torch.testing.assert_close(normalised, reference)


def test_entropy_loss_gradient_is_finite_when_probabilities_underflow():
    codebook = torch.eye(4, requires_grad=True)
    latents = torch.eye(4)[[0, 0, 1, 1]].requires_grad_(True)
    entropy_loss(latents, codebook, temperature=1e-4)["loss"].backward()
    assert torch.isfinite(codebook.grad).all() and torch.isfinite(latents.grad).all()


def test_disentanglement_loss_known_answers():
    v = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    assert disentanglement_loss(v, torch.tensor([0.0, 3.0]).view(1, 2, 1, 1)).item() == pytest.approx(
        0.0
    )  # orthogonal
    assert disentanglement_loss(v, 2 * v).item() == pytest.approx(1.0)  # parallel
    assert disentanglement_loss(v, -v).item() == pytest.approx(1.0)  # anti-parallel
    assert disentanglement_loss(v, torch.tensor([1.0, 1.0]).view(1, 2, 1, 1)).item() == pytest.approx(0.5)  # 45 deg
    two_positions = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)  # (1,0) and (0,1)
    assert disentanglement_loss(two_positions, torch.ones(1, 2, 1, 2)).item() == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------------------ the config
def test_loss_config_defaults_are_the_papers_and_json_round_trip():
    config = GloTokLossConfig()
    assert (config.reconstruction_loss, config.residual_weight, config.histogram_weight) == ("l2", 0.5, 0.01)
    assert (config.disc_weight, config.disc_start, config.disc_loss) == (0.5, 20000, "hinge")
    assert config.entropy_weight == config.disentanglement_weight == 0.0 and not config.disc_adaptive_weight
    restored = GloTokLossConfig(**json.loads(json.dumps(config.to_dict())))
    assert restored == config


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"reconstruction_loss": "l3"}, ValueError, "reconstruction_loss"),
        ({"disc_loss": "wgan"}, ValueError, "disc_loss"),
        ({"residual_weight": -0.5}, ValueError, "residual_weight"),
        ({"histogram_weight": float("nan")}, ValueError, "histogram_weight"),
        ({"disc_weight": True}, TypeError, "disc_weight"),
        ({"perceptual_weight": "1"}, TypeError, "perceptual_weight"),
        ({"histogram_num_bins": 1}, ValueError, "histogram_num_bins"),
        ({"histogram_alpha": 0.0}, ValueError, "histogram_alpha"),
        ({"disc_start": -1}, ValueError, "disc_start"),
        ({"disc_start": 1.5}, TypeError, "disc_start"),
        ({"entropy_temperature": 0}, ValueError, "entropy_temperature"),
        ({"disc_adaptive_weight": 1}, TypeError, "disc_adaptive_weight"),
    ],
)
def test_loss_config_bad_values(kwargs, error, match):
    with pytest.raises(error, match=match):
        GloTokLossConfig(**kwargs)


def test_loss_config_rejects_unknown_keys():
    with pytest.raises(TypeError, match="lambda_hist"):
        GloTokLossConfig(**{"lambda_hist": 0.1})


# -------------------------------------------------------------------------------------------- objective: set-up
def test_objective_warns_once_when_perceptual_or_histogram_cannot_run():
    with pytest.warns(UserWarning) as record:
        GloTokObjective(GloTokLossConfig())
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    assert any("perceptual (LPIPS) loss is OFF" in m and "glotok convert-lpips" in m for m in messages)
    assert any("histogram relation loss" in m and "OFF" in m for m in messages)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        GloTokObjective(GloTokLossConfig(perceptual_weight=0.0, histogram_weight=0.0))
        GloTokObjective(GloTokLossConfig(perceptual_weight=0.0), teacher_histogram=uniform_teacher())


@pytest.mark.parametrize(
    "teacher, match",
    [
        (uniform_teacher(39), "39 bins"),
        (torch.full((40,), float("nan")), "NaN or inf"),
        (torch.cat([torch.full((39,), 1 / 39), torch.tensor([float("inf")])]), "NaN or inf"),
        (torch.cat([torch.full((39,), 2 / 39), torch.tensor([-1.0])]), "non-negative"),
        (torch.ones(40), "sum to 1"),
        (uniform_teacher().view(4, 10), "1-D"),
    ],
)
def test_objective_rejects_bad_teacher_histograms(teacher, match):
    with pytest.raises(ValueError, match=match):
        GloTokObjective(GloTokLossConfig(perceptual_weight=0.0), teacher_histogram=teacher)


def test_objective_rejects_bad_arguments():
    with pytest.raises(ValueError, match="not both"):
        GloTokObjective(
            GloTokLossConfig(perceptual_model_path="x.safetensors", histogram_weight=0.0),
            perceptual=MeanAbsoluteDistance(),
        )
    with pytest.raises(FileNotFoundError, match="convert-lpips"):
        GloTokObjective(GloTokLossConfig(perceptual_model_path="/nonexistent/lpips.safetensors", histogram_weight=0.0))


# -------------------------------------------------------------------------------------- objective: end to end
def test_total_is_the_weighted_sum_and_gradients_reach_both_codebooks(images):
    model = tiny_glotok_model().train()
    discriminator = tiny_discriminator()
    config = dict(
        reconstruction_weight=1.5, codebook_weight=0.7, residual_weight=0.5, histogram_weight=0.3,
        perceptual_weight=0.9, disc_weight=0.5, disc_start=10, disc_adaptive_weight=True, entropy_weight=0.2,
        entropy_temperature=0.1, disentanglement_weight=0.4,
    )  # fmt: skip
    objective = quiet_objective(teacher=uniform_teacher(), perceptual=MeanAbsoluteDistance(), **config)
    output = model(images)
    terms = objective.generator_loss(
        output, images, global_step=10, discriminator=discriminator, **codebook_kwargs(model)
    )
    assert set(terms) == {"loss", *GENERATOR_TERMS}
    for name in GENERATOR_TERMS:
        assert terms[name].shape == () and not terms[name].requires_grad and torch.isfinite(terms[name])
        if name != "adaptive_weight":
            assert terms[name] != 0, name  # every term is on
    expected = (
        1.5 * terms["reconstruction_loss"] + 0.9 * terms["perceptual_loss"]
        + 0.7 * (terms["codebook_loss"] + terms["commitment_loss"]) + 0.5 * terms["residual_loss"]
        + 0.3 * terms["histogram_loss"] + 0.5 * terms["adaptive_weight"] * terms["generator_adversarial_loss"]
        + 0.2 * terms["entropy_loss"] + 0.4 * terms["disentanglement_loss"]
    )  # fmt: skip
    torch.testing.assert_close(terms["loss"].detach(), expected)
    # the named terms are the functions' values
    torch.testing.assert_close(terms["reconstruction_loss"], F.mse_loss(output.sample, images).detach())
    torch.testing.assert_close(terms["codebook_loss"], output.codebook_loss.detach())
    torch.testing.assert_close(
        terms["histogram_loss"],
        histogram_relation_loss(model.semantic.quantizer.embedding.weight, uniform_teacher()).detach(),
    )
    torch.testing.assert_close(terms["generator_adversarial_loss"], -discriminator(output.sample).mean().detach())
    terms["loss"].backward()
    for name in ("semantic", "visual"):
        grad = getattr(model, name).quantizer.embedding.weight.grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
    assert model.semantic.residual.proj_out.weight.grad.abs().sum() > 0


def test_histogram_term_adds_gradient_on_the_semantic_codebook(images):
    def semantic_grad(histogram_weight: float) -> torch.Tensor:
        model = tiny_glotok_model().train()
        objective = quiet_objective(teacher=uniform_teacher(), histogram_weight=histogram_weight, disc_start=100)
        terms = objective.generator_loss(model(images), images, global_step=0, **codebook_kwargs(model))
        terms["loss"].backward()
        return model.semantic.quantizer.embedding.weight.grad.clone()

    with_histogram, without = semantic_grad(1.0), semantic_grad(0.0)
    codebook = tiny_glotok_model().semantic.quantizer.embedding.weight.detach().requires_grad_(True)
    histogram_relation_loss(codebook, uniform_teacher()).backward()
    torch.testing.assert_close(with_histogram - without, codebook.grad, atol=1e-6, rtol=1e-4)


def test_adversarial_terms_are_exactly_zero_before_disc_start(images):
    model = tiny_glotok_model().train()
    discriminator = CountingModule(tiny_discriminator())
    objective = quiet_objective(disc_start=5, disc_adaptive_weight=True)
    assert not objective.discriminator_active(4) and objective.discriminator_active(5)
    output = model(images)
    terms = objective.generator_loss(
        output, images, global_step=4, discriminator=discriminator, **codebook_kwargs(model)
    )
    assert terms["generator_adversarial_loss"].item() == 0.0 and terms["adaptive_weight"].item() == 0.0
    d_terms = objective.discriminator_loss(discriminator, images, output.sample, global_step=4)
    assert all(value.item() == 0.0 for value in d_terms.values())
    d_terms["loss"].backward()  # a no-op, so a loop may call it unconditionally
    assert discriminator.calls == 0
    assert all(p.grad is None for p in discriminator.parameters())
    # without the adversarial term the total is the weighted sum of the rest
    after = objective.generator_loss(
        output, images, global_step=5, discriminator=discriminator, **codebook_kwargs(model)
    )
    assert discriminator.calls == 1 and after["generator_adversarial_loss"] != 0
    assert (after["loss"] - terms["loss"]).item() == pytest.approx(
        0.5 * (after["adaptive_weight"] * after["generator_adversarial_loss"]).item(), rel=1e-5
    )


def test_disc_weight_zero_keeps_the_discriminator_off():
    objective = quiet_objective(disc_weight=0.0, disc_start=0)
    assert not objective.discriminator_active(10**6)


def test_discriminator_loss_detaches_reconstructions_and_scales_by_disc_weight(images):
    model = tiny_glotok_model().train()
    discriminator = tiny_discriminator()
    objective = quiet_objective(disc_start=0, disc_loss="non_saturating", disc_weight=0.25)
    output = model(images)
    terms = objective.discriminator_loss(discriminator, images, output.sample, global_step=0)
    logits_real, logits_fake = discriminator(images), discriminator(output.sample)
    expected = non_saturating_discriminator_loss(logits_real=logits_real, logits_fake=logits_fake)["loss"]
    torch.testing.assert_close(terms["discriminator_adversarial_loss"], expected.detach())
    torch.testing.assert_close(terms["loss"], 0.25 * expected)
    torch.testing.assert_close(terms["logits_real"], logits_real.mean().detach())
    torch.testing.assert_close(terms["logits_fake"], logits_fake.mean().detach())
    terms["loss"].backward()
    assert all(p.grad is None for p in model.parameters())
    assert all(p.grad is not None for p in discriminator.parameters())


def test_generator_loss_in_eval_under_no_grad(images):
    model = tiny_glotok_model()
    objective = quiet_objective(disc_start=0, disc_adaptive_weight=True)
    with torch.no_grad():
        terms = objective.generator_loss(
            model(images), images, global_step=0, discriminator=tiny_discriminator(), **codebook_kwargs(model)
        )
    assert terms["adaptive_weight"].item() == 0.0 and torch.isfinite(terms["loss"])


def test_l1_reconstruction_and_a_single_codebook_model(images):
    model = tiny_glotok_model(semantic_codebook_size=0)
    objective = quiet_objective(reconstruction_loss="l1", entropy_weight=0.1, disc_start=100)
    output = model(images)
    terms = objective.generator_loss(
        output, images, global_step=0, visual_codebook=model.visual.quantizer.embedding.weight
    )
    torch.testing.assert_close(terms["reconstruction_loss"], F.l1_loss(output.sample, images).detach())
    expected_entropy = entropy_loss(
        output.visual_latents, model.visual.quantizer.embedding.weight, 0.01, l2_normalize=True
    )
    torch.testing.assert_close(terms["entropy_loss"], expected_entropy["loss"].detach())


@pytest.mark.parametrize(
    "overrides, objective_kwargs, call_kwargs, error, match",
    [
        ({"semantic_codebook_size": 0}, {"teacher": uniform_teacher()}, {}, ValueError, "no semantic codebook"),
        ({}, {"teacher": uniform_teacher()}, {"semantic_codebook": None}, ValueError, "semantic_codebook="),
        ({"semantic_codebook_size": 0}, {"disentanglement_weight": 0.1}, {}, ValueError, "dual-codebook"),
        ({}, {"entropy_weight": 0.1}, {"visual_codebook": None}, ValueError, "visual_codebook="),
        ({}, {"disc_start": 0}, {"discriminator": None}, ValueError, "needs the discriminator"),
        ({}, {"disc_start": 0, "disc_adaptive_weight": True}, {"last_layer": None}, ValueError, "last_layer"),
        ({}, {}, {"pixel_values": torch.zeros(2, 3, 8, 8)}, ValueError, "shapes differ"),
    ],
)
def test_generator_loss_bad_input(images, overrides, objective_kwargs, call_kwargs, error, match):
    model = tiny_glotok_model(**overrides)
    objective = quiet_objective(**{"disc_start": 100, **objective_kwargs})
    output = model(images)
    kwargs = {"global_step": 0, "discriminator": tiny_discriminator(), "pixel_values": images}
    if model.semantic is not None:
        kwargs["semantic_codebook"] = model.semantic.quantizer.embedding.weight
    kwargs.update(visual_codebook=model.visual.quantizer.embedding.weight, last_layer=model.get_last_layer())
    kwargs.update(call_kwargs)
    with pytest.raises(error, match=match):
        objective.generator_loss(output, kwargs.pop("pixel_values"), **kwargs)


def test_soft_histogram_is_exported():
    histogram = soft_cosine_histogram(torch.eye(3))
    assert histogram.shape == (40,) and histogram.sum().item() == pytest.approx(1.0)


def test_objective_docstring_example_runs():
    result = doctest.testmod(glotok_hf.losses.objective, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
