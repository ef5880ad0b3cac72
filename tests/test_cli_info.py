"""`seed-hf info`: config, parameter counts per part, dtypes and file sizes of a model folder."""

import pytest
import torch
from transformers import BertConfig

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


def test_info_describes_a_seed_opt_folder(tmp_path, capsys, model):
    model.save_pretrained(tmp_path)
    assert main(["info", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "seed_opt (SeedOPTForConditionalGeneration)" in printed and "text_config: OPTConfig" in printed


def error_line(capsys) -> str:
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_info_refuses_folders_of_other_kinds(tmp_path, capsys):
    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8).save_pretrained(
        tmp_path / "bert"
    )
    capsys.readouterr()
    assert main(["info", str(tmp_path / "bert")]) == 1
    assert "config.json says model_type 'bert'" in error_line(capsys)

    (tmp_path / "decode").mkdir()
    (tmp_path / "decode" / "model_index.json").write_text('{"_class_name": "SeedDecodePipeline"}')
    assert main(["info", str(tmp_path / "decode")]) == 1
    assert "is a SeedDecodePipeline folder, not a SEED tokenizer folder or a SEED-OPT folder" in error_line(capsys)

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"")
    assert main(["info", str(tmp_path / "photos")]) == 1
    assert "neither config.json nor model_index.json" in error_line(capsys)

    assert main(["info", str(tmp_path / "missing/")]) == 1
    assert f"no such file or folder: {tmp_path / 'missing'}" in error_line(capsys)


@pytest.mark.parametrize("kept", [0.5, 0.001], ids=["data", "header"])
def test_info_names_a_truncated_safetensors_file(tmp_path, capsys, kept):
    tiny_tokenizer().save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    content = weights.read_bytes()
    weights.write_bytes(content[: int(len(content) * kept)])
    capsys.readouterr()  # the save's progress bar
    assert main(["info", str(tmp_path)]) == 1
    assert f"error: {weights} is not a complete safetensors file" in error_line(capsys)
