"""The metrics of `seed-hf evaluate` against answers worked out by hand from the reference definitions."""

import itertools
import math
import shutil

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

from seed_hf.evaluation.metrics import (
    caption_metrics,
    clip_image_similarity,
    codebook_usage,
    gqa_exact_match,
    normalize_vqa_answer,
    ptb_tokenize,
    vqa_accuracy,
)

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="the PTB tokenizer and METEOR run on Java")


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("Yes", "yes"),  # lower case
        ("yes\n", "yes"),  # line breaks and tabs, then surrounding spaces
        ("red\tcar", "red car"),
        ("yes, it is", "yes it is"),  # a mark touching a space is deleted
        ("t-shirt", "t shirt"),  # a mark between letters becomes a space
        ("red,blue", "red blue"),
        ("1,000", "1000"),  # digit-comma-digit: every mark is deleted
        ("(1,000)", "1000"),
        ("yes.", "yes"),  # periods go...
        ("2.5", "2.5"),  # ...unless a digit follows
        ("two", "2"),  # number words
        ("none", "0"),
        ("Ten", "10"),
        ("a dog", "dog"),  # articles
        ("the red one", "red 1"),
        ("an apple", "apple"),
        ("dont", "don't"),  # contractions get their apostrophe back
        ("isnt", "isn't"),
        ("couldnt've", "couldn't've"),  # several apostrophes: any one may be missing
        ("couldn'tve", "couldn't've"),
        ("yall", "y'all"),
        ("its", "its"),  # a word of its own stays
        ("im", "im"),  # the official table's capitalised entries never apply
        ("lets", "lets"),
    ],
)
def test_vqa_normalisation_rules(answer, expected):
    assert normalize_vqa_answer(answer) == expected


def leave_one_out_accuracy(prediction: str, answers: list[str]) -> float:
    """The definition: min(#matches among 9 annotators / 3, 1) averaged over the 10 choose 9 subsets."""
    subsets = list(itertools.combinations(answers, len(answers) - 1))
    return sum(min(subset.count(prediction) / 3, 1) for subset in subsets) / len(subsets)


@pytest.mark.parametrize("matches, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_accuracy_averages_over_annotator_subsets(matches, expected):
    answers = ["cat"] * matches + ["dog"] * (10 - matches)
    assert vqa_accuracy("cat", answers) == pytest.approx(expected)
    assert vqa_accuracy("cat", answers) == pytest.approx(leave_one_out_accuracy("cat", answers))


def test_vqa_accuracy_normalises_prediction_and_answers():
    answers = ["2", "2", "two", "Two.", "3", "3", "3", "3", "4", "4"]
    assert vqa_accuracy("The two", answers) == pytest.approx(1.0)  # 4 annotators said 2 in some form
    assert vqa_accuracy("four", answers) == pytest.approx(0.6)


def test_vqa_accuracy_rejects_missing_answers():
    with pytest.raises(ValueError, match="non-empty list"):
        vqa_accuracy("yes", [])
    with pytest.raises(ValueError, match="list of reference answers"):
        vqa_accuracy("yes", "yes")


def test_gqa_exact_match():
    assert gqa_exact_match("Yes.", "yes") == 1.0
    assert gqa_exact_match("the left one", "left 1") == 1.0
    assert gqa_exact_match("left", "right") == 0.0


@needs_java
def test_ptb_tokenization_lowercases_splits_and_drops_punctuation():
    tokens = ptb_tokenize({"1": ["A man's dog, running (fast)."], "2": ["Don't stop!"]})
    # As in the reference tool, lower-casing turns brackets into -lrb- / -rrb-, which its punctuation list misses.
    assert tokens == {"1": ["a man 's dog running -lrb- fast -rrb-"], "2": ["do n't stop"]}


@needs_java
def test_caption_metrics_equal_hand_computed_bleu_and_cider():
    predictions = {"1": "A dog.", "2": "The cat sleeps here"}
    references = {"1": ["a dog runs"], "2": ["the cat sleeps here."]}
    scores = caption_metrics(predictions, references)

    # CIDEr-D: with two images every n-gram of a reference has idf log(2). Image 1: cosines 2/sqrt(6) (unigrams)
    # and 1/sqrt(2) (bigrams), no trigrams, length penalty exp(-1 / (2 * 6^2)); image 2 is its reference with
    # 1- to 4-grams (cosine 1). CIDEr-D = 10 x mean over n, averaged over images.
    image_1 = 10 * (2 / math.sqrt(6) + 1 / math.sqrt(2)) / 4 * math.exp(-1 / 72)
    image_2 = 10.0
    assert scores["CIDEr"] == pytest.approx(100 * (image_1 + image_2) / 2, rel=1e-6)
    # BLEU-4 over the corpus: every n-gram of the predictions matches (6/6, 4/4, 2/2, 1/1), but they have 6 words
    # against 7 in the references: brevity penalty exp(1 - 7/6).
    assert scores["BLEU-4"] == pytest.approx(100 * math.exp(1 - 7 / 6), rel=1e-6)
    assert 0 < scores["METEOR"] < 100 and 0 < scores["ROUGE-L"] <= 100


@needs_java
def test_caption_metrics_perfect_and_wrong_captions():
    references = {"1": ["a red bus on a street"], "2": ["two cats on a sofa"]}
    perfect = caption_metrics({"1": "a red bus on a street", "2": "two cats on a sofa"}, references)
    wrong = caption_metrics({"1": "a plate of food", "2": "a man skiing"}, references)
    assert perfect["BLEU-4"] == pytest.approx(100)
    assert perfect["ROUGE-L"] == pytest.approx(100)
    for name in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr"):
        assert wrong[name] < perfect[name]


def test_caption_metrics_reject_mismatched_inputs():
    with pytest.raises(ValueError, match="same images"):
        caption_metrics({"1": "a dog"}, {"2": ["a dog"]})
    with pytest.raises(ValueError, match="without reference captions"):
        caption_metrics({"1": "a dog"}, {"1": []})


def tiny_clip() -> tuple[CLIPModel, CLIPImageProcessor]:
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
        vision_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=8,
    )
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return CLIPModel(config).eval(), processor


def random_image(seed: int, size: int = 48) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_clip_similarity_is_100_for_the_same_image_and_lower_for_another():
    model, processor = tiny_clip()
    first, second = random_image(0), random_image(1)
    same, different = clip_image_similarity(model, processor, [first, first], [first.copy(), second])
    assert same == pytest.approx(100, abs=1e-4)
    assert different < 99


def test_clip_similarity_needs_pairs():
    model, processor = tiny_clip()
    with pytest.raises(ValueError, match="as many images"):
        clip_image_similarity(model, processor, [random_image(0)], [])


def test_codebook_usage():
    assert codebook_usage([[0, 0], [0, 0]]) == {"distinct_codes": 1, "perplexity": pytest.approx(1)}
    uniform = codebook_usage([[0, 1], [2, 3]], codebook_size=8)
    assert uniform == {"distinct_codes": 4, "perplexity": pytest.approx(4), "usage": 50.0}
    skewed = codebook_usage([[0, 0, 0, 1]])  # entropy of (3/4, 1/4)
    assert skewed["perplexity"] == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    with pytest.raises(ValueError, match="No codes"):
        codebook_usage([])
