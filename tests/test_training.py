"""End-to-end training: loss, schedule, resume, checkpoints, bad situations, the command line."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from clocks import StepClock

from mtfap.backbones import create_backbone
from mtfap.cli import main
from mtfap.data.synthetic import load_synthetic
from mtfap.model.checkpoint import load_checkpoint
from mtfap.model.runs import open_run
from mtfap.training import trainer
from mtfap.training.config import TrainConfig
from mtfap.training.trainer import (
    TimeBudget,
    TrainingError,
    learning_rate,
    masked_bce,
    positive_weights,
    train,
)

SMALL_CNN = {"input_size": 32, "widths": [8, 16]}


@pytest.fixture(scope="module")
def faces():
    return load_synthetic(n=60, size=32, seed=0)


@pytest.fixture
def config(tmp_path):
    return TrainConfig(data="synthetic", backbone="compact", backbone_args=SMALL_CNN,
                       heads="lowrank_sparse", optimizer="adamw", lr=3e-3, epochs=3,
                       batch_size=10, seed=1, device="cpu", progress=False,
                       cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / "run"))


def weights(path):
    return load_checkpoint(path)["model"]


def train_killed_in_epoch_two(config, faces, folder):
    """Start the run of ``config`` in ``folder`` and kill it at step 8 (in epoch 2 of 5-step
    epochs, after the epoch-1 checkpoint); returns its config, to resume."""
    def kill(step):
        if step == 8:
            raise KeyboardInterrupt
    killed = replace(config, output_dir=str(folder))
    with pytest.raises(KeyboardInterrupt):
        train(killed, dataset=faces, on_step=kill)
    return killed


def assert_same_weights(a, b, tolerance=0.0):
    assert a.keys() == b.keys()
    for name in (n for n in a if isinstance(a[n], torch.Tensor)):
        difference = (a[name].double() - b[name].double()).abs().max().item() \
            if a[name].numel() else 0
        assert difference <= tolerance, f"{name} differs by {difference}"


def test_masked_bce_ignores_missing_labels():
    torch.manual_seed(0)
    logits = torch.randn(6, 4, requires_grad=True)
    labels = torch.randint(0, 2, (6, 4)).float()
    mask = torch.rand(6, 4) > 0.3
    loss = masked_bce(logits, labels, mask, mask.sum())
    loss.backward()
    known = torch.nn.functional.binary_cross_entropy_with_logits(logits[mask], labels[mask])
    assert torch.allclose(loss, known)
    # A missing label's value changes nothing, and its logit gets no gradient.
    flipped = torch.where(mask, labels, 1 - labels)
    assert torch.equal(masked_bce(logits, flipped, mask, mask.sum()), loss)
    assert torch.all(logits.grad[~mask] == 0)


def test_masked_bce_label_smoothing_moves_the_targets():
    torch.manual_seed(0)
    logits = torch.randn(5, 3)
    labels = torch.randint(0, 2, (5, 3)).float()
    mask = torch.ones(5, 3, dtype=torch.bool)
    smoothed = masked_bce(logits, labels, mask, mask.sum(), smoothing=0.2)
    targets = torch.where(labels > 0, 0.9, 0.1)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    assert torch.allclose(smoothed, expected)
    # The smoothed loss is smallest at a finite logit: sigmoid(z) = 0.9 for a positive label.
    z = torch.linspace(-6, 6, 1201).unsqueeze(1)
    per_z = [masked_bce(v.view(1, 1), torch.ones(1, 1), torch.ones(1, 1, dtype=torch.bool), 1,
                        smoothing=0.2).item() for v in z]
    best = z[int(torch.tensor(per_z).argmin())].item()
    assert torch.sigmoid(torch.tensor(best)).item() == pytest.approx(0.9, abs=1e-3)
    with pytest.raises(ValueError, match="label_smoothing"):
        TrainConfig(label_smoothing=1.0)


def test_positive_weights_balance_each_attribute_over_its_known_labels():
    # attribute 0: 1 positive, 3 negatives; 1: 2 and 1, one label missing; 2: no positive.
    labels = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0], [0, 1, 0]])
    mask = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 0, 1]], dtype=bool)
    assert positive_weights(labels, mask, 0.0) is None
    assert positive_weights(labels, mask, 1.0).tolist() == pytest.approx([3.0, 0.5, 1.0])
    assert positive_weights(labels, mask, 0.5).tolist() == pytest.approx([3 ** 0.5, 0.5 ** 0.5,
                                                                          1.0])
    # In the loss, a positive label of attribute 0 counts three times.
    logits = torch.zeros(1, 3)
    one = torch.ones(1, 3, dtype=torch.bool)
    weighted = masked_bce(logits, torch.ones(1, 3), one, 3,
                          pos_weight=positive_weights(labels, mask, 1.0))
    assert weighted.item() == pytest.approx((3.0 + 0.5 + 1.0) * np.log(2) / 3)
    assert masked_bce(logits, torch.zeros(1, 3), one, 3, pos_weight=torch.tensor(
        [3.0, 0.5, 1.0])).item() == pytest.approx(np.log(2))  # negatives keep weight 1
    with pytest.raises(ValueError, match="positive_weight_power"):
        TrainConfig(positive_weight_power=2)


def test_learning_rate_schedules():
    cosine = TrainConfig(lr=0.1, epochs=2, warmup_epochs=0.5)
    rates = [learning_rate(cosine, s, steps_per_epoch=10) for s in range(20)]
    assert rates[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])  # linear warm-up
    assert rates[5] == pytest.approx(0.1) and rates[-1] < 0.003
    assert all(a >= b for a, b in zip(rates[5:], rates[6:]))
    step = TrainConfig(lr=0.1, epochs=4, schedule="step", step_epochs=2, step_gamma=0.5)
    rates = [learning_rate(step, s, 10) for s in (0, 19, 20, 39)]
    assert rates == pytest.approx([0.1, 0.1, 0.05, 0.05])


def test_cosine_follows_the_time_budget_when_it_runs_out_first():
    config = TrainConfig(lr=0.1, epochs=100, time_budget_minutes=1.0)
    assert learning_rate(config, 5, 10, time_fraction=0.5) == pytest.approx(0.05)
    assert learning_rate(config, 5, 10, time_fraction=1.0) == pytest.approx(0.0)
    # The step count decides when the epochs end before the budget.
    assert learning_rate(replace(config, epochs=1), 5, 10, time_fraction=0.0) == \
        pytest.approx(0.05)
    with pytest.raises(ValueError, match="time_budget_minutes must be > 0"):
        TrainConfig(time_budget_minutes=0)


def test_time_budget_stops_the_run_inside_the_budget_and_resumes(faces, config, tmp_path,
                                                                 monkeypatch):
    clock = StepClock(rate=1.0, start=1000.0)
    monkeypatch.setattr(TimeBudget, "clock", staticmethod(clock))
    # 20 simulated seconds = 20 steps; 100 epochs would be far more.
    config = replace(config, epochs=100, time_budget_minutes=20 / 60)
    result = train(config, dataset=faces, on_step=clock.step)
    steps_per_epoch = result.history[0]["step"]
    # Stopped early: the budget, minus the reserve for the last validation (one step's time per
    # validation batch before any validation was measured), is what the run used.
    assert 15 <= result.steps < 20 and len(result.history) < 100
    last = result.history[-1]
    assert last["elapsed_minutes"] * 60 == pytest.approx(result.steps)
    assert last["elapsed_minutes"] <= 20 / 60
    assert last["complete"] == (result.steps % steps_per_epoch == 0)
    # The cosine ran on the fraction of the budget: the last step's rate.
    fraction = (result.steps - 1) / 20
    assert last["lr"] == pytest.approx(learning_rate(config, result.steps - 1, steps_per_epoch,
                                                     fraction))
    assert last["lr"] < 0.1 * config.lr
    assert load_checkpoint(result.output_dir / "last.pt")["elapsed"] == pytest.approx(result.steps)

    # Killed in epoch 2 and resumed: the elapsed time continues from the checkpoint's, so the
    # resumed run takes the same steps at the same rates and ends with the same weights.
    def kill(step):
        clock.step(step)
        if step == steps_per_epoch + 2:
            raise KeyboardInterrupt
    killed = replace(config, output_dir=str(tmp_path / "killed"))
    with pytest.raises(KeyboardInterrupt):
        train(killed, dataset=faces, on_step=kill)
    clock.now += 500.0  # the time between the kill and the resume does not count
    resumed = train(killed, dataset=faces, resume=True, on_step=clock.step)
    assert resumed.steps == result.steps
    assert_same_weights(weights(result.output_dir / "last.pt"),
                        weights(tmp_path / "killed" / "last.pt"))


def test_run_folder_holds_config_metrics_and_checkpoints(faces, config):
    result = train(config, dataset=faces)
    run = result.output_dir
    assert json.loads((run / "config.json").read_text()) == json.loads(json.dumps(config.to_dict()))
    csv = pd.read_csv(run / "metrics.csv")
    assert list(csv["epoch"]) == [1, 2, 3] and csv["complete"].all()
    assert json.loads((run / "metrics.json").read_text())[-1]["step"] == result.steps
    assert csv["train_loss"].iloc[-1] < csv["train_loss"].iloc[0]  # it learns something
    best_epoch = int(csv["epoch"][csv["val_mean_accuracy"].idxmax()])
    assert load_checkpoint(run / "best.pt")["epoch"] == best_epoch == result.best["epoch"]
    assert load_checkpoint(run / "last.pt")["epoch"] == 3
    assert json.loads((run / "heads_summary.json").read_text())["method"] == "lowrank_sparse"
    assert (run / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the epoch curve
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp"))
    # A second run into the same folder must not overwrite it silently.
    with pytest.raises(ValueError, match="already holds a run.*--resume"):
        train(config, dataset=faces)


@pytest.mark.parametrize("heads, params", [("lowrank_sparse", {}),
                                           ("lowrank_sparse", {"solver": "paper"}),
                                           ("graph", {"xi": 0.1})])
def test_resumed_runs_end_where_an_uninterrupted_run_ends(faces, config, tmp_path, heads, params):
    """Killed in epoch 2 (after the epoch-1 checkpoint), or stopped inside an epoch by
    max_steps, then resumed: the final weights equal the uninterrupted run's exactly (the paper
    solver's SVDs, duals and probe generator and the learned graph are checkpointed too)."""
    config = replace(config, heads=heads, heads_params=params)
    full = train(replace(config, output_dir=str(tmp_path / "full")), dataset=faces)

    killed = train_killed_in_epoch_two(config, faces, tmp_path / "killed")
    assert load_checkpoint(tmp_path / "killed" / "last.pt")["epoch"] == 1
    resumed = train(killed, dataset=faces, resume=True)

    stopped = replace(config, output_dir=str(tmp_path / "stopped"), max_steps=7)
    train(stopped, dataset=faces)
    assert load_checkpoint(tmp_path / "stopped" / "last.pt")["batch_in_epoch"] == 2
    train(replace(stopped, max_steps=None), dataset=faces, resume=True)

    assert resumed.steps == full.steps
    for run in ("killed", "stopped"):
        assert_same_weights(weights(tmp_path / "full" / "last.pt"),
                            weights(tmp_path / run / "last.pt"))
    assert [r["val_mean_accuracy"] for r in resumed.history] == \
        [r["val_mean_accuracy"] for r in full.history]


def test_weight_average_follows_the_ema_formula_resumes_and_is_what_the_run_delivers(
        faces, config, tmp_path, monkeypatch):
    """ema_decay: after every step ema = d * ema + (1 - d) * weights (checked against the
    weights of each step); each epoch validates the average and records the raw weights'
    accuracy beside it; a run killed and resumed ends with the same average; open_run gives
    the average."""
    decay = 0.8
    config = replace(config, heads="independent", ema_decay=decay)
    seen = []
    expected = {}

    def follow(step):
        # Called after the step's update: recompute the average from the weights seen.
        state = {k: v.detach().clone().double() for k, v in model_of_run[0].state_dict().items()
                 if v.is_floating_point()}
        for name, value in state.items():
            expected[name] = value if not seen else decay * expected[name] + (1 - decay) * value
        seen.append(step)

    model_of_run = []  # the trained model, seen when the trainer makes its average
    make_ema = trainer.make_ema
    monkeypatch.setattr(trainer, "make_ema",
                        lambda model, d: model_of_run.append(model) or make_ema(model, d))
    full = train(replace(config, output_dir=str(tmp_path / "full")), dataset=faces,
                 on_step=follow)
    monkeypatch.undo()
    last = load_checkpoint(tmp_path / "full" / "last.pt")
    assert last["ema_updates"] == len(seen) == full.steps
    averaged = {k: v for k, v in last["ema"].items() if v.is_floating_point()}
    assert averaged.keys() == expected.keys()
    for name, value in averaged.items():
        assert torch.allclose(value.double(), expected[name], atol=1e-5), name
    # The average differs from the raw weights (else the check above proves nothing).
    assert any(not torch.allclose(last["ema"][k], last["model"][k]) for k in averaged)
    rows = pd.read_csv(tmp_path / "full" / "metrics.csv")
    assert {"val_mean_accuracy", "val_mean_accuracy_raw"} <= set(rows.columns)

    killed = train_killed_in_epoch_two(config, faces, tmp_path / "killed")
    train(killed, dataset=faces, resume=True)
    resumed = load_checkpoint(tmp_path / "killed" / "last.pt")
    assert resumed["ema_updates"] == last["ema_updates"]
    assert_same_weights(last["ema"], resumed["ema"])

    run = open_run(tmp_path / "full", checkpoint="last")
    assert_same_weights(run.model.state_dict(), last["ema"])
    raw = open_run(tmp_path / "full", checkpoint="last", weights="raw")
    assert_same_weights(raw.model.state_dict(), last["model"])


def test_resume_with_another_config_is_refused(faces, config):
    train(replace(config, epochs=1), dataset=faces)
    with pytest.raises(ValueError, match="another configuration.*lr: checkpoint 0.003, now 0.01"):
        train(replace(config, epochs=1, lr=0.01), dataset=faces, resume=True)


def test_frozen_backbone_epochs_train_only_the_heads(faces, config):
    torch.manual_seed(config.seed)
    before = {k: v.clone() for k, v in create_backbone("compact", **SMALL_CNN).state_dict().items()}
    train(replace(config, epochs=1, freeze_backbone_epochs=1), dataset=faces)
    after = weights(f"{config.output_dir}/last.pt")
    backbone_after = {k.removeprefix("backbone."): v for k, v in after.items()
                      if k.startswith("backbone.")}
    assert_same_weights(before, backbone_after)  # weights and batch-norm statistics unchanged
    head_names = [k for k in after if k.startswith("heads.")]
    assert head_names and load_checkpoint(f"{config.output_dir}/last.pt")["step"] == 5


def test_heads_learn_at_head_lr_scale_times_the_backbone_rate(faces, config):
    from mtfap.model.network import build_model
    from mtfap.training.trainer import make_optimizer
    scaled = replace(config, head_lr_scale=10.0, schedule="none")
    model = build_model(scaled.model_spec(list(faces.attributes)))
    groups = make_optimizer(scaled, model).param_groups
    assert [g["lr_scale"] for g in groups] == [1.0, 10.0]
    seen = []
    result = train(replace(scaled, epochs=1, channels_last=False,
                           augmentation={"flip_prob": 0.0, "brightness": 0.0}),
                   dataset=faces, on_step=lambda step: seen.append(step))
    optimizer = load_checkpoint(f"{config.output_dir}/last.pt")["optimizer"]
    assert [g["lr"] for g in optimizer["param_groups"]] == [config.lr, 10 * config.lr]
    assert seen and result.history[0]["complete"]


class Sabotaged(torch.nn.Module):
    """A backbone that misbehaves on its ``fail_at``-th training call."""

    def __init__(self, failure, fail_at):
        super().__init__()
        self.inner = create_backbone("compact", **SMALL_CNN)
        self.input_spec, self.feature_dim = self.inner.input_spec, self.inner.feature_dim
        self.failure, self.fail_at, self.calls = failure, fail_at, 0

    def forward(self, x):
        features = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls == self.fail_at:
                if self.failure == "nan":
                    return features * float("nan")
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return features


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(faces, config):
    with pytest.raises(TrainingError) as error:
        train(config, dataset=faces, backbone=Sabotaged("nan", fail_at=7))
    message = str(error.value)
    assert "non-finite loss" in message and "epoch 2, step 7 (batch 2 of the epoch" in message
    assert "last good checkpoint" in message and "--lr" in message
    kept = load_checkpoint(f"{config.output_dir}/last.pt")
    assert kept["epoch"] == 1 and all(torch.isfinite(v).all() for v in kept["model"].values()
                                      if isinstance(v, torch.Tensor) and v.is_floating_point())


def test_out_of_memory_suggests_a_smaller_batch(faces, config):
    with pytest.raises(TrainingError, match=r"out of memory.*try --batch-size 5"):
        train(config, dataset=faces, backbone=Sabotaged("oom", fail_at=1))


def test_train_command_merges_file_flags_and_overrides(tmp_path, capsys):
    from data_factory import make_celeba
    make_celeba(tmp_path / "celeba", n=24)
    (tmp_path / "run.yaml").write_text(
        "backbone: compact\nbackbone_args: {input_size: 32, widths: [8, 16]}\nheads: graph\n"
        "epochs: 5\nbatch_size: 4\nlr: 0.5\ndevice: cpu\n")
    run = tmp_path / "run"
    args = ["train", "--config", str(tmp_path / "run.yaml"), "--data", str(tmp_path / "celeba"),
            "--epochs", "2", "--set", "lr=0.01", "--param", "xi=0.5", "--head-lr-scale", "3",
            "--set", "backbone_args.widths=[8, 12]", "--attributes",
            "Male,Smiling,Young", "--output-dir", str(run), "--cache-dir", str(tmp_path / "cache"),
            "--no-progress"]
    assert main(args) == 0
    saved = json.loads((run / "config.json").read_text())
    assert (saved["epochs"], saved["lr"], saved["heads"], saved["batch_size"]) == \
        (2, 0.01, "graph", 4)
    assert saved["heads_params"] == {"xi": 0.5}
    assert saved["head_lr_scale"] == 3.0 and saved["backbone_args"]["widths"] == [8, 12]
    assert saved["attributes"] == ["Male", "Smiling", "Young"]
    assert (run / "last.pt").is_file() and "best epoch" in capsys.readouterr().out
    # --resume of a finished run reads its config.json and has nothing left to do.
    assert main(["train", "--resume", "--output-dir", str(run), "--no-progress"]) == 0
    assert main([*args[:-1], "--set", "lr=0.02", "--resume"]) == 2
    assert "another configuration" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path / "celeba"), "--set", "epoch=3"]) == 2
    assert "did you mean 'epochs'" in capsys.readouterr().err.lower()


def test_bf16_autocast_flip_test_and_workers_run_on_a_cpu(faces, config):
    result = train(replace(config, amp="bf16", flip_test=True, num_workers=1, max_steps=3),
                   dataset=faces)
    row = result.history[-1]
    assert result.steps == 3 and not row["complete"]
    assert np.isfinite(row["train_loss"]) and 0 <= row["val_mean_accuracy"] <= 1


def test_train_command_bad_head_parameter_is_a_one_line_error(capsys):
    assert main(["train", "--data", "synthetic", "--param", "lam"]) == 2
    assert "--param 'lam': expected key=value" in capsys.readouterr().err


@pytest.mark.parametrize("amx, avx512_bf16", [(True, False), (False, True), (False, False)])
def test_auto_amp_uses_bf16_on_cpus_only_where_it_is_fast(monkeypatch, amx, avx512_bf16):
    """amp="auto": bf16 autocast on a CPU with AMX tiles or AVX512-BF16, float32 on others
    (where bf16 is emulated: 14.7x slower on an AVX2 EPYC); "bf16" and "off" do as they say."""
    from mtfap.model.inference import autocast
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    cpu = torch.device("cpu")
    x = torch.ones(2, 2)

    def dtype_under(amp):
        with autocast(amp, cpu):
            return (x @ x).dtype
    assert dtype_under("auto") == (torch.bfloat16 if amx or avx512_bf16 else torch.float32)
    assert dtype_under("bf16") == torch.bfloat16
    assert dtype_under("off") == torch.float32


def test_a_run_can_start_from_a_trained_model_and_train_on(faces, config, tmp_path):
    from mtfap.model import build_model
    from mtfap.training.trainer import start_from_trained

    independent = replace(config, heads="independent", heads_params={}, epochs=1)
    first = train(independent, dataset=faces).output_dir
    trained = open_run(first).predictor().model.eval()
    model = build_model(independent.model_spec(list(faces.attributes)))
    start_from_trained(model, str(first))
    images = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(images), trained(images), rtol=1e-4, atol=1e-5)
    # It trains on from there; the heads keep computing on the raw features (the standardiser
    # stays the identity map instead of estimating new statistics).
    second = train(replace(independent, init=str(first), output_dir=str(tmp_path / "second")),
                   dataset=faces).output_dir
    state = weights(second / "last.pt")
    assert torch.all(state["heads.standardizer.mean"] == 0)
    assert not torch.equal(state["heads.weight"], weights(first / "last.pt")["heads.weight"])
    with pytest.raises(ValueError, match="init .*needs heads = \"independent\""):
        replace(config, init=str(first))
    other = load_synthetic(n=60, size=32, seed=0).select_attributes(list(faces.attributes)[:3])
    with pytest.raises(ValueError, match="other attributes"):
        train(replace(independent, init=str(first), output_dir=str(tmp_path / "third")),
              dataset=other)


def test_frozen_layers_keep_the_first_layers_and_train_the_rest(faces, config):
    dlib = replace(config, backbone="dlib_face_resnet", backbone_args={}, heads="independent",
                   heads_params={}, epochs=1, max_steps=2, frozen_layers=4)
    torch.manual_seed(dlib.seed)
    start = create_backbone("dlib_face_resnet").state_dict()
    train(dlib, dataset=faces)
    after = {k.removeprefix("backbone."): v for k, v in weights(f"{dlib.output_dir}/last.pt")
             .items() if k.startswith("backbone.")}
    # Layers 1-4: the stem and the first three residual blocks; then the fourth block trains.
    fixed = [k for k in start if k.startswith(("conv1.", "affine1.", "blocks.0.", "blocks.1.",
                                               "blocks.2."))]
    assert len(fixed) == 2 * 2 + 3 * 8
    assert_same_weights({k: start[k] for k in fixed}, {k: after[k] for k in fixed})
    assert not torch.equal(start["blocks.3.conv1.weight"], after["blocks.3.conv1.weight"])
    with pytest.raises(ValueError, match="frozen_layers: the backbone has 15 layers, got 16"):
        train(replace(dlib, frozen_layers=16), dataset=faces, overwrite=True)
    with pytest.raises(ValueError, match="frozen_layers: backbone .* does not list its layers"):
        train(replace(config, frozen_layers=1), dataset=faces, overwrite=True)
    with pytest.raises(ValueError, match="frozen_layers must be >= 0"):
        replace(config, frozen_layers=-1)
