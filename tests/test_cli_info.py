"""`seed-hf info`: config, parameter counts per part, dtypes and file sizes of a model folder."""

import torch

from seed_hf.cli import main

from conftest import tiny_tokenizer


def test_info_describes_a_model_folder(tmp_path, capsys):
    model = tiny_tokenizer().to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    assert main(["info", str(tmp_path)]) == 0

    printed = capsys.readouterr().out
    assert "seed_vision_tokenizer (SeedVisionTokenizer)" in printed
    assert "codebook_size: 64" in printed and "num_hidden_layers: 2" in printed
    for part in ("vision_model", "qformer", "quantizer", "decoder", "query_tokens"):
        count = sum(parameter.numel() for name, parameter in model.named_parameters() if name.startswith(part))
        assert f"{part}" in printed and f"{count:,}  BF16" in printed
    total = sum(parameter.numel() for parameter in model.parameters())
    assert f"{total:,}" in printed
    assert "model.safetensors" in printed and "config.json" in printed


def test_info_reports_a_missing_folder(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing")]) == 1
    assert "error:" in capsys.readouterr().err
