"""Behaviour of SeedVisionTokenizer on tiny random models."""

import copy

import pytest
import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModel
from transformers.modeling_layers import GradientCheckpointingLayer

from seed_hf import SeedImageProcessor, SeedVisionTokenizer, SeedVisionTokenizerConfig

from conftest import randomize_, tiny_config, tiny_tokenizer


class SeedVisionTokenizerTester:
    """Builds a tiny seeded model and matching inputs."""

    batch_size = 3

    def __init__(self, attn_implementation="sdpa"):
        self.model = tiny_tokenizer()
        self.model.set_attn_implementation(attn_implementation)
        self.config = self.model.config
        size = self.config.vision_config.image_size
        self.pixel_values = torch.randn(self.batch_size, 3, size, size, generator=torch.Generator().manual_seed(1))


@pytest.fixture(params=["eager", "sdpa"])
def tester(request):
    return SeedVisionTokenizerTester(request.param)


def test_output_shapes(tester):
    config = tester.config
    with torch.no_grad():
        outputs = tester.model(tester.pixel_values)
    batch, queries = tester.batch_size, config.num_query_tokens
    assert outputs.codes.shape == (batch, queries) and outputs.codes.dtype == torch.long
    assert outputs.quantized.shape == (batch, queries, config.codebook_dim)
    assert outputs.generation_embeds.shape == (batch, config.num_reverse_tokens, config.generation_embed_dim)
    assert outputs.image_embeds.shape == (batch, 5, config.vision_config.hidden_size)
    assert outputs.causal_query_output.shape == (batch, queries, config.qformer_config.hidden_size)
    assert torch.equal(outputs.quantized, tester.model.quantizer.codebook.weight[outputs.codes])
    assert outputs.codes.unique().numel() > 4, "codes of different queries and images should differ"


def test_encode_and_embed_codes_agree_with_forward(tester):
    with torch.no_grad():
        outputs = tester.model(tester.pixel_values)
    assert torch.equal(tester.model.encode(tester.pixel_values), outputs.codes)
    torch.testing.assert_close(tester.model.embed_codes(outputs.codes), outputs.generation_embeds)


def test_codes_are_the_nearest_codebook_entries(tester):
    with torch.no_grad():
        outputs = tester.model(tester.pixel_values)
        projected = tester.model.quantizer.encode_task_layer(outputs.causal_query_output)
    distances = torch.cdist(projected, tester.model.quantizer.codebook.weight.expand(tester.batch_size, -1, -1))
    assert torch.equal(distances.argmin(-1), outputs.codes)


def test_batch_results_equal_one_at_a_time(tester):
    with torch.no_grad():
        batched = tester.model(tester.pixel_values)
        for row in range(tester.batch_size):
            single = tester.model(tester.pixel_values[row : row + 1])
            assert torch.equal(single.codes, batched.codes[row : row + 1])
            torch.testing.assert_close(single.generation_embeds, batched.generation_embeds[row : row + 1])


def test_eager_and_sdpa_agree():
    eager, sdpa = SeedVisionTokenizerTester("eager"), SeedVisionTokenizerTester("sdpa")
    assert eager.model.decoder.blocks.layers[0].self_attn.config._attn_implementation == "eager"
    assert sdpa.model.decoder.reverse_qformer.config._attn_implementation == "sdpa"
    with torch.no_grad():
        first, second = eager.model(eager.pixel_values), sdpa.model(sdpa.pixel_values)
    assert torch.equal(first.codes, second.codes)
    torch.testing.assert_close(first.generation_embeds, second.generation_embeds, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("query", [0, 7, 31])
def test_queries_are_causal(tester, query):
    """Changing query j never changes the outputs of queries before j, but does change query j itself."""
    model = tester.model
    with torch.no_grad():
        before = model(tester.pixel_values)
        model.query_tokens[:, query] += 3.0
        after = model(tester.pixel_values)
    assert torch.equal(after.codes[:, :query], before.codes[:, :query])
    assert torch.equal(after.causal_query_output[:, :query], before.causal_query_output[:, :query])
    assert not torch.allclose(after.causal_query_output[:, query], before.causal_query_output[:, query])


def test_reverse_qformer_is_bidirectional(tokenizer_model):
    """Every generation-embedding token depends on the last code (no causal mask on the decoder side)."""
    codes = torch.zeros(1, tokenizer_model.config.num_query_tokens, dtype=torch.long)
    changed = codes.clone()
    changed[0, -1] = 1
    first, second = tokenizer_model.embed_codes(codes), tokenizer_model.embed_codes(changed)
    assert ((first - second).abs().amax(-1) > 0).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision(tester, dtype):
    model = copy.deepcopy(tester.model).to(dtype)
    with torch.no_grad():
        outputs = model(tester.pixel_values)
        reference = tester.model(tester.pixel_values)
    assert outputs.generation_embeds.dtype == dtype
    assert (outputs.codes == reference.codes).float().mean() > 0.7
    assert torch.isfinite(outputs.generation_embeds).all()


def test_save_and_load_round_trip_through_auto_classes(tokenizer_model, tmp_path):
    tokenizer_model.save_pretrained(tmp_path)
    SeedImageProcessor(size={"height": 28, "width": 28}).save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), SeedVisionTokenizerConfig)
    loaded = AutoModel.from_pretrained(tmp_path)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, SeedVisionTokenizer) and isinstance(processor, SeedImageProcessor)
    for name, tensor in tokenizer_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    pixel_values = processor(torch.rand(2, 3, 40, 30), return_tensors="pt").pixel_values
    assert pixel_values.shape == (2, 3, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(pixel_values).generation_embeds, tokenizer_model(pixel_values).generation_embeds, atol=0, rtol=0
        )


def test_a_folder_of_another_model_is_refused(tokenizer_model, tmp_path):
    tokenizer_model.config.qformer_config.save_pretrained(tmp_path)  # a Q-Former is not a SEED tokenizer
    with pytest.raises(ValueError, match=r"got model_type 'blip_2_qformer'. Convert the original release"):
        SeedVisionTokenizer.from_pretrained(tmp_path)


def test_device_map_auto_loads(tokenizer_model, tmp_path):
    tokenizer_model.save_pretrained(tmp_path)
    loaded = AutoModel.from_pretrained(tmp_path, device_map="auto")
    pixel_values = torch.randn(1, 3, 28, 28)
    assert torch.equal(loaded.encode(pixel_values), tokenizer_model.encode(pixel_values))


def test_released_size_defaults():
    config = SeedVisionTokenizerConfig()
    vision, qformer = config.vision_config, config.qformer_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads, vision.intermediate_size) == (
        1408,
        39,
        16,
        6144,
    )
    assert (
        qformer.hidden_size,
        qformer.num_hidden_layers,
        qformer.intermediate_size,
        qformer.encoder_hidden_size,
    ) == (
        768,
        12,
        3072,
        1408,
    )
    assert (config.num_query_tokens, config.codebook_size, config.num_reverse_tokens) == (32, 8192, 77)
    assert qformer.hidden_dropout_prob == 0.0 and qformer.attention_probs_dropout_prob == 0.0


def test_codes_are_deterministic_in_train_mode(tokenizer_model):
    pixel_values = torch.randn(2, 3, 28, 28)
    expected = tokenizer_model.encode(pixel_values)
    assert torch.equal(tokenizer_model.train().encode(pixel_values), expected)


@pytest.mark.parametrize(
    "pixel_values, message",
    [
        (torch.randn(3, 28, 28), r"shape \(batch_size, 3, 28, 28\)"),
        (torch.randn(1, 1, 28, 28), r"shape \(batch_size, 3, 28, 28\)"),
        (torch.randn(1, 3, 32, 32), r"got \(1, 3, 32, 32\)"),
        (torch.full((1, 3, 28, 28), float("nan")), "NaN"),
        (torch.full((1, 3, 28, 28), float("inf")), "infinite"),
        (torch.full((1, 3, 28, 28), 1e30), r"within \[-10, 10\]"),
        (torch.full((1, 3, 28, 28), 255.0), r"within \[-10, 10\]"),
        (torch.zeros(1, 3, 28, 28, dtype=torch.long), "floating-point"),
        ([[0.0]], "torch.Tensor"),
    ],
)
def test_bad_pixel_values(tokenizer_model, pixel_values, message):
    with pytest.raises(ValueError, match=message):
        tokenizer_model.encode(pixel_values)
    with pytest.raises(ValueError, match=message):
        tokenizer_model(pixel_values)


@pytest.mark.parametrize(
    "codes, message",
    [
        (torch.full((1, 32), 64), r"\[0, 64\)"),
        (torch.full((1, 32), -1), r"\[0, 64\)"),
        (torch.full((1, 32), 200, dtype=torch.uint8), r"\[0, 64\)"),
        (torch.zeros(1, 31, dtype=torch.long), r"\(batch_size, 32\)"),
        (torch.zeros(32, dtype=torch.long), r"\(batch_size, 32\)"),
        (torch.zeros(1, 32), "integer"),
        (torch.zeros(1, 32, dtype=torch.bool), "integer"),
        ([[0] * 32], "torch.LongTensor"),
    ],
)
def test_bad_codes(tokenizer_model, codes, message):
    with pytest.raises(ValueError, match=message):
        tokenizer_model.embed_codes(codes)


def test_tiny_config_matches_shipped_json():
    from conftest import REPO_ROOT

    shipped = SeedVisionTokenizerConfig.from_json_file(REPO_ROOT / "configuration" / "seed_tokenizer_tiny.json")
    assert shipped.to_diff_dict() == tiny_config().to_diff_dict()
    released = SeedVisionTokenizerConfig.from_json_file(REPO_ROOT / "configuration" / "seed_tokenizer_v1.json")
    assert released.to_diff_dict() == SeedVisionTokenizerConfig().to_diff_dict()


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
def test_codes_of_any_integer_dtype(dtype):
    """Codes are compared in int64: uint8 codes against a 256-entry codebook (256 wraps to 0 in uint8) are fine."""
    model = tiny_tokenizer(codebook_size=256)
    codes = torch.arange(32).repeat(2, 1) * (7 if dtype == torch.uint8 else 3)
    assert codes.max() >= 128 if dtype == torch.uint8 else codes.max() < 128
    torch.testing.assert_close(model.embed_codes(codes.to(dtype)), model.embed_codes(codes), atol=0, rtol=0)


def test_empty_batches_give_empty_outputs(tokenizer_model):
    config = tokenizer_model.config
    pixel_values = torch.zeros(0, 3, 28, 28)
    codes = tokenizer_model.encode(pixel_values)
    assert codes.shape == (0, config.num_query_tokens) and codes.dtype == torch.long
    embeds = tokenizer_model.embed_codes(torch.zeros(0, config.num_query_tokens, dtype=torch.int32))
    assert embeds.shape == (0, config.num_reverse_tokens, config.generation_embed_dim)
    with torch.no_grad():
        outputs = tokenizer_model(pixel_values)
        one = tokenizer_model(torch.zeros(1, 3, 28, 28))
    for name in ("codes", "quantized", "generation_embeds", "image_embeds", "causal_query_output"):
        assert outputs[name].shape == (0, *one[name].shape[1:]) and outputs[name].dtype == one[name].dtype, name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_pixel_values(tokenizer_model, dtype):
    """Half-precision pixel values give the codes of the same values in float32, for a float32 model."""
    pixel_values = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(3)).to(dtype)
    assert torch.equal(tokenizer_model.encode(pixel_values), tokenizer_model.encode(pixel_values.float()))


def test_return_dict_false_gives_tuples(tokenizer_model):
    pixel_values = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        outputs = tokenizer_model(pixel_values)
        as_tuple = tokenizer_model(pixel_values, return_dict=False)
        tokenizer_model.config.return_dict = False
        from_config = tokenizer_model(pixel_values)
    assert type(as_tuple) is tuple and type(from_config) is tuple and len(as_tuple) == 5
    for first, second, third in zip(outputs.to_tuple(), as_tuple, from_config):
        assert torch.equal(first, second) and torch.equal(first, third)


def test_hidden_states_and_attentions_compare_eager_and_sdpa_layer_by_layer():
    eager, sdpa = SeedVisionTokenizerTester("eager"), SeedVisionTokenizerTester("sdpa")
    config = eager.config
    with torch.no_grad():
        first = eager.model(eager.pixel_values, output_hidden_states=True, output_attentions=True)
        second = sdpa.model(sdpa.pixel_values, output_hidden_states=True)
    depths = {
        "vision_hidden_states": config.vision_config.num_hidden_layers,
        "qformer_hidden_states": config.qformer_config.num_hidden_layers,
        "decoder_hidden_states": config.decoder_num_blocks,
        "reverse_qformer_hidden_states": config.reverse_qformer_num_hidden_layers,
    }
    for name, depth in depths.items():
        assert len(first[name]) == len(second[name]) == depth + 1, name
        for layer, (eager_state, sdpa_state) in enumerate(zip(first[name], second[name])):
            torch.testing.assert_close(eager_state, sdpa_state, atol=1e-5, rtol=1e-5, msg=f"{name}[{layer}]")
    torch.testing.assert_close(
        first.vision_hidden_states[-1],
        eager.model.vision_model.encoder(eager.model.vision_model.embeddings(eager.pixel_values)).last_hidden_state,
    )
    assert second.vision_attentions is None
    vision_heads, patches = config.vision_config.num_attention_heads, first.image_embeds.shape[1]
    assert [tuple(weights.shape) for weights in first.vision_attentions] == depths["vision_hidden_states"] * [
        (eager.batch_size, vision_heads, patches, patches)
    ]
    assert len(first.qformer_cross_attentions) == len(first.reverse_qformer_cross_attentions) == 1
    # The causal Q-Former's self-attention (its first recorded weights) puts no weight on later queries.
    self_attention = first.qformer_attentions[0]
    assert self_attention.shape[-2:] == (config.num_query_tokens, config.num_query_tokens)
    assert self_attention.triu(1).abs().max() == 0
    torch.testing.assert_close(self_attention.sum(-1), torch.ones_like(self_attention.sum(-1)))


def test_gradient_checkpointing_gives_equal_gradients(tokenizer_model):
    pixel_values = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(4))

    def gradients(model):
        outputs = model.train()(pixel_values)
        (outputs.generation_embeds.square().mean() + outputs.causal_query_output.square().mean()).backward()
        return {name: parameter.grad for name, parameter in model.named_parameters() if parameter.grad is not None}

    checkpointed = copy.deepcopy(tokenizer_model)
    checkpointed.gradient_checkpointing_enable()
    layers = [module for module in checkpointed.modules() if isinstance(module, GradientCheckpointingLayer)]
    assert len(layers) == 2 + 2 + 2 + 2, "vision layers, Q-Former layers, decoder blocks, reverse Q-Former layers"
    assert checkpointed.is_gradient_checkpointing and all(layer.gradient_checkpointing for layer in layers)
    expected, actual = gradients(tokenizer_model), gradients(checkpointed)
    assert expected.keys() == actual.keys() and any("vision_model" in name for name in expected)
    for name, gradient in expected.items():
        torch.testing.assert_close(actual[name], gradient, msg=name)


def compile_model() -> SeedVisionTokenizer:
    """`tiny_config` with one layer per part: compiling takes seconds per layer on a CPU."""
    config = tiny_config(decoder_num_blocks=1, reverse_qformer_num_hidden_layers=1)
    config.vision_config.num_hidden_layers = config.qformer_config.num_hidden_layers = 1
    return randomize_(SeedVisionTokenizer(config).eval())


def test_compiled_encode_fullgraph_equals_eager():
    model = compile_model()
    pixel_values = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(5))
    compiled = torch.compile(model.encode, fullgraph=True)
    assert torch.equal(compiled(pixel_values), model.encode(pixel_values))
    with pytest.raises(RuntimeError):  # the value check stays in the graph as a runtime assertion
        compiled(torch.full_like(pixel_values, float("nan")))
    assert torch.is_grad_enabled(), "a failed check must not leave gradients off"


def test_compiled_embed_codes_fullgraph_equals_eager():
    model = compile_model()
    codes = torch.randint(0, model.config.codebook_size, (2, 32), generator=torch.Generator().manual_seed(6))
    compiled = torch.compile(model.embed_codes, fullgraph=True)
    torch.testing.assert_close(compiled(codes), model.embed_codes(codes), atol=1e-4, rtol=1e-4)
    with pytest.raises(RuntimeError):
        compiled(torch.full_like(codes, model.config.codebook_size))
    assert torch.is_grad_enabled(), "a failed check must not leave gradients off"


class _Method(torch.nn.Module):
    """Wraps one method of a model as the `forward` that `torch.export` traces."""

    def __init__(self, model, name):
        super().__init__()
        self.model, self.name = model, name

    def forward(self, inputs):
        return getattr(self.model, self.name)(inputs)


def test_exported_encode_and_embed_codes_equal_eager():
    model = compile_model()
    pixel_values = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(7))
    codes = model.encode(pixel_values)
    exported_encode = torch.export.export(_Method(model, "encode"), (pixel_values,)).module()
    exported_embed = torch.export.export(_Method(model, "embed_codes"), (codes,)).module()
    assert torch.equal(exported_encode(pixel_values), codes)
    torch.testing.assert_close(exported_embed(codes), model.embed_codes(codes), atol=1e-4, rtol=1e-4)
    with pytest.raises(RuntimeError):  # the value checks stay in the exported graph as runtime assertions
        exported_encode(torch.full((2, 3, 28, 28), float("nan")))
    with pytest.raises(RuntimeError):
        exported_embed(torch.full_like(codes, -1))
    assert torch.is_grad_enabled(), "a failed check must not leave gradients off"
