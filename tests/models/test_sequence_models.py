"""CharLSTM (LEAF's Shakespeare model) and the Transformer: shapes, maths, metric, every executor."""

from __future__ import annotations

import logging
import os

import pytest
import torch
from torch import nn
from torchmetrics.functional.classification import multiclass_accuracy

from lightning_asyncfl.client import ClientTrainer
from lightning_asyncfl.errors import InvalidValue, InvalidValues
from lightning_asyncfl.executors.batched import why_not_batched
from lightning_asyncfl.models import CharLSTM, Transformer
from lightning_asyncfl.run import run
from tests.data.leaf_fixtures import write_shakespeare

TINY = ["progress=false", "server.max_steps=4", "server.eval_every=4", "server.scheduler.concurrency=2"]


def _tokens(n: int, length: int = 80, vocab: int = 80, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (n, length), generator=torch.Generator().manual_seed(seed))


def test_char_lstm_is_leafs_stacked_lstm():
    model = CharLSTM(input_shape=[80], num_classes=80)

    assert model.embedding.weight.shape == (80, 8)
    assert (model.lstm.input_size, model.lstm.hidden_size, model.lstm.num_layers, model.lstm.batch_first) == (8, 256, 2, True)
    assert model.head.weight.shape == (80, 256)
    # LEAF's TensorFlow cells: 80*8 + (8+256)*1024 + 1024 + (256+256)*1024 + 1024 + 256*80 + 80;
    # PyTorch's LSTM keeps two bias vectors per layer (b_ih, b_hh), one more 1024 per layer
    leaf = 80 * 8 + (8 + 256) * 1024 + 1024 + (256 + 256) * 1024 + 1024 + 256 * 80 + 80
    assert sum(p.numel() for p in model.parameters()) == leaf + 2 * 1024


def test_char_lstm_predicts_from_the_last_step_of_the_second_layer():
    # Oracle: the two LSTM layers unrolled by hand with LSTMCell on the same weights
    torch.manual_seed(0)
    model = CharLSTM(input_shape=[12], num_classes=80, hidden=16).eval()
    x = _tokens(3, length=12)
    cells = []
    for layer in range(2):
        cell = nn.LSTMCell(8 if layer == 0 else 16, 16)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).data.copy_(getattr(model.lstm, f"{name}_l{layer}"))
        cells.append(cell)
    h = [torch.zeros(3, 16), torch.zeros(3, 16)]
    c = [torch.zeros(3, 16), torch.zeros(3, 16)]
    with torch.no_grad():
        for t in range(12):
            inp = model.embedding(x[:, t])
            for layer in range(2):
                h[layer], c[layer] = cells[layer](inp, (h[layer], c[layer]))
                inp = h[layer]
        expected = model.head(h[1])
        got = model(x)

    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_validation_logs_the_next_token_accuracy_of_torchmetrics():
    model = CharLSTM(input_shape=[20], num_classes=80, hidden=8).eval()
    x, y = _tokens(50, length=20), torch.randint(0, 80, (50,), generator=torch.Generator().manual_seed(1))
    logged = {}
    model.log = lambda name, value, **kw: logged.__setitem__(name, float(value))  # what the evaluator collects

    with torch.no_grad():
        model.validation_step((x, y), 0)
        logits = model(x)

    assert logged["accuracy"] == pytest.approx(float((logits.argmax(1) == y).float().mean()))
    assert logged["accuracy"] == pytest.approx(float(multiclass_accuracy(logits, y, num_classes=80, average="micro")))


def test_a_causal_transformer_position_sees_only_earlier_tokens():
    torch.manual_seed(0)
    model = Transformer(input_shape=[10], num_classes=80, d_model=16, nhead=2, num_layers=2, dim_feedforward=32).eval()
    x = _tokens(2, length=10)
    changed = x.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 80
    mask = nn.Transformer.generate_square_subsequent_mask(10)

    with torch.no_grad():
        hidden = [model.layers(model.embedding(v) + model.position, mask=mask) for v in (x, changed)]
        out = model(x)

    torch.testing.assert_close(hidden[0][:, :6], hidden[1][:, :6])  # positions 0..5 ignore tokens 6..9
    assert not torch.allclose(hidden[0][:, 6:], hidden[1][:, 6:])
    torch.testing.assert_close(out, model.head(model.norm(hidden[0][:, -1])))


@pytest.mark.parametrize("causal", [True, False])
def test_padding_is_masked_as_a_key(causal):
    # the last position must not depend on what a padding token embeds to, once pad_index is set
    torch.manual_seed(0)
    x = torch.tensor([[0, 0, 0, 5, 6, 7], [0, 9, 3, 5, 6, 2]])
    outputs = {}
    for pad_index in (0, None):
        model = Transformer(input_shape=[6], num_classes=12, d_model=16, nhead=2, num_layers=1, dim_feedforward=16, causal=causal, pad_index=pad_index).eval()
        with torch.no_grad():
            before = model(x)
            model.embedding.weight[0] += torch.randn(16, generator=torch.Generator().manual_seed(1))  # not a constant: LayerNorm removes those
            outputs[pad_index] = (before, model(x))
    torch.testing.assert_close(outputs[0][0], outputs[0][1])
    assert not torch.allclose(outputs[None][0], outputs[None][1])


@pytest.mark.parametrize(
    "cls, kwargs, keys",
    [
        (CharLSTM, dict(input_shape=[1, 28, 28], hidden=0), {"input_shape", "hidden"}),
        (Transformer, dict(input_shape=[16], d_model=30, nhead=4, dropout=1.5), {"nhead", "dropout"}),
        (Transformer, dict(input_shape=[16], pad_index=80), {"pad_index"}),
    ],
)
def test_bad_settings_are_reported_together(cls, kwargs, keys):
    with pytest.raises((InvalidValue, InvalidValues)) as error:
        cls(num_classes=80, **kwargs)
    problems = getattr(error.value, "problems", [error.value])
    assert {p.key for p in problems} == keys


# -- with the framework's executors ------------------------------------------------------


def _weights(summary: dict) -> dict[str, torch.Tensor]:
    return torch.load(os.path.join(summary["output_dir"], "final_model.pt"), weights_only=True)


@pytest.fixture(scope="module")
def shakespeare(tmp_path_factory):
    root = tmp_path_factory.mktemp("leaf")
    write_shakespeare(root, [(10, 2), (6, 2), (8, 2)])
    return root


LSTM = ["model.hidden=8"]
TRANSFORMER = ["model=transformer", "model.d_model=16", "model.nhead=2", "model.num_layers=1", "model.dim_feedforward=16"]


def _same_bytes(summaries: dict, sequential: dict) -> None:
    reference = _weights(sequential)
    for name, summary in summaries.items():
        weights = _weights(summary)
        assert summary["failed"] == 0 and summary["client_updates"] == sequential["client_updates"], name
        assert all(torch.equal(weights[k], reference[k]) for k in reference), name


@pytest.mark.parametrize("model", [LSTM, TRANSFORMER], ids=["char_lstm", "transformer"])
def test_threads_and_the_batched_fallback_give_the_sequential_bytes(model, shakespeare, make_cfg, caplog):
    common = ["data=shakespeare", f"data.root={shakespeare}", *TINY, *model]
    sequential = run(make_cfg(*common, name="sequential"))

    with caplog.at_level(logging.WARNING, logger="lightning_asyncfl.executors.batched"):
        threads = run(make_cfg(*common, "executor=threads", "executor.workers=2", name="threads"))
        batched = run(make_cfg(*common, "executor=batched", name="batched"))  # the per-client path: the same bytes

    _same_bytes({"threads": threads, "batched": batched}, sequential)
    name, layer = ("CharLSTM", "LSTM") if model is LSTM else ("Transformer", "MultiheadAttention")
    assert f"BatchedExecutor trains one client at a time: {name} has {layer} layers" in caplog.text
    assert "batched training of" not in caplog.text  # the fallback is chosen at start, never by a failed batch


@pytest.mark.slow
def test_worker_processes_give_the_sequential_bytes(shakespeare, make_cfg):
    common = ["data=shakespeare", f"data.root={shakespeare}", *TINY, *LSTM]
    sequential = run(make_cfg(*common, name="sequential"))
    processes = run(make_cfg(*common, "executor=processes", "executor.workers=2", name="processes"))
    _same_bytes({"processes": processes}, sequential)


@pytest.mark.slow
@pytest.mark.parametrize("model", [LSTM, TRANSFORMER], ids=["char_lstm", "transformer"])
def test_ray_gives_the_sequential_bytes(model, shakespeare, make_cfg):
    pytest.importorskip("ray", reason="Ray is the optional extra lightning-asyncfl[ray]")
    common = ["data=shakespeare", f"data.root={shakespeare}", *TINY, *model]
    sequential = run(make_cfg(*common, name="sequential"))
    ray = run(make_cfg(*common, "executor=ray", "executor.init_num_cpus=2", name="ray"))
    _same_bytes({"ray": ray}, sequential)


def test_why_not_batched_names_recurrent_and_attention_layers():
    x = _tokens(8, length=5)
    train = torch.utils.data.TensorDataset(x, torch.zeros(8, dtype=torch.int64))
    indices = [torch.arange(0, 4), torch.arange(4, 8)]
    lstm = ClientTrainer(CharLSTM(input_shape=[5], num_classes=80, hidden=4), train, indices)
    transformer = ClientTrainer(Transformer(input_shape=[5], num_classes=80, d_model=8, nhead=2, optimizer="sgd"), train, indices)

    assert why_not_batched(lstm) == "CharLSTM has LSTM layers, which torch.func.vmap runs one client at a time (no batching rule)"
    assert why_not_batched(transformer) == "Transformer has MultiheadAttention layers, which torch.func.vmap runs one client at a time (no batching rule)"


def test_the_system_model_counts_the_lstms_matrix_products():
    # an LSTM layer's forward is 2 * 4H * (input + H) multiply-adds per step; training counts it about 3 times
    from lightning_asyncfl.system.flops import training_flops_per_example

    x = _tokens(4, length=10)
    data = torch.utils.data.TensorDataset(x, torch.zeros(4, dtype=torch.int64))
    model = CharLSTM(input_shape=[10], num_classes=80, hidden=16)

    flops = training_flops_per_example(model, data, batch_size=4)

    forward = 10 * (2 * 64 * (8 + 16) + 2 * 64 * (16 + 16)) + 2 * 16 * 80
    assert 2.5 * forward < flops <= 3 * forward
