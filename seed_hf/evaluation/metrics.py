"""
The metrics of the SEED paper, computed as the reference tools compute them.

- VQAv2 accuracy with the official answer normalisation (punctuation, number words, articles, contractions) and the
  average over the 10 leave-one-annotator-out subsets; GQA exact match.
- COCO caption metrics (BLEU-4, METEOR, ROUGE-L, CIDEr-D) through the scorers of `pycocoevalcap`, after its PTB
  tokenization (Stanford CoreNLP, run with Java). SPICE is left out: it needs Stanford CoreNLP models that
  `pycocoevalcap` downloads at run time.
- CLIP image–image similarity (cosine × 100) and codebook usage (distinct codes, perplexity) for reconstruction.
"""

import functools
import math
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import torch

# Number words the VQA evaluation writes as digits, and the articles it drops.
NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = {"a", "an", "the"}
# Punctuation the VQA evaluation removes (or turns into spaces); apostrophes and periods are handled apart.
VQA_PUNCTUATION = ';/[]"{}()=+\\_-><@`,?!'
# Contractions the VQA evaluation restores when written without an apostrophe. A form with one apostrophe is
# matched without it ("dont"); one with several is matched with any single one of them left out ("couldnt've",
# "couldn'tve"). As in the official table, "i'm", "i've", "let's", "she's" and "somebody'd" are never restored (its
# entries for them are capitalised, identical or reversed), nor forms whose bare spelling is a word ("its", "were").
VQA_CONTRACTIONS = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't he'd "
    "he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't mightn't've might've mustn't must've "
    "needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't shouldn't've somebody'd've "
    "somebody'll somebody's someone'd someone'd've someone'll someone's something'd something'd've something'll "
    "that's there'd there'd've there're there's they'd they'd've they'll they're they've 'twas wasn't we'd've we've "
    "weren't what'll what're what's what've when's where'd where's where've who'd who'd've who'll who's who've why'll "
    "why're why's won't would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've"
).split()
# A period not followed by a digit is deleted ("2.5" keeps its point); a comma between digits marks a number.
_PERIOD = re.compile(r"\.(?!\d)")
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
SPICE_SKIPPED = (
    "SPICE not computed: pycocoevalcap downloads the Stanford CoreNLP 3.6.0 models it needs at run time, and this "
    "evaluation runs offline"
)


def _contraction_table() -> dict[str, str]:
    table = {}
    for contraction in VQA_CONTRACTIONS:
        apostrophes = [index for index, character in enumerate(contraction) if character == "'"]
        for index in apostrophes:
            table[contraction[:index] + contraction[index + 1 :]] = contraction
    return table


_CONTRACTIONS = _contraction_table()


def normalize_vqa_answer(answer: str) -> str:
    """
    An answer as the official VQA evaluation compares it: line breaks and tabs become spaces; each punctuation mark is
    deleted when it touches a space or the answer holds a digit-comma-digit, else replaced by a space; periods not
    followed by a digit are deleted; then, word by word in lower case, number words become digits, articles are
    dropped and contractions written without their apostrophe get it back.
    """
    text = answer.replace("\n", " ").replace("\t", " ").strip()
    joined = _DIGIT_COMMA_DIGIT.search(text) is not None
    for mark in VQA_PUNCTUATION:
        touches_space = f"{mark} " in text or f" {mark}" in text
        text = text.replace(mark, "" if touches_space or joined else " ")
    text = _PERIOD.sub("", text)
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """
    VQAv2 accuracy of one prediction against the annotators' answers (10 in VQAv2): for each annotator left out,
    min(#other annotators who gave the prediction / 3, 1), averaged over the annotators. Prediction and answers are
    normalised by [`normalize_vqa_answer`]. The official script normalises only the punctuation of the answers, and
    only when the annotators disagree; the two differ only on answers not already stored in normal form.
    """
    if isinstance(answers, str) or not answers:
        raise ValueError(f"Expected a non-empty list of reference answers, got {answers!r}")
    prediction = normalize_vqa_answer(prediction)
    matches = sum(normalize_vqa_answer(answer) == prediction for answer in answers)
    # Leaving out an annotator who gave the prediction leaves matches - 1 others; leaving out another leaves matches.
    left_out_matching = min(1.0, (matches - 1) / 3) if matches else 0.0
    left_out_other = min(1.0, matches / 3)
    return (matches * left_out_matching + (len(answers) - matches) * left_out_other) / len(answers)


def gqa_exact_match(prediction: str, answer: str) -> float:
    """GQA accuracy of one prediction: 1.0 when it equals the answer after [`normalize_vqa_answer`], else 0.0."""
    return float(normalize_vqa_answer(prediction) == normalize_vqa_answer(answer))


def require_java() -> None:
    """Raise `FileNotFoundError` unless a Java runtime, which the COCO caption tools run on, is on the PATH."""
    if shutil.which("java") is None:
        raise FileNotFoundError(
            "The COCO caption metrics run Stanford CoreNLP and METEOR, which need a Java runtime: install one "
            "(e.g. apt-get install default-jre-headless) so that `java` is on the PATH"
        )


def ptb_tokenize(captions: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """
    Captions tokenized as the COCO caption evaluation does: Stanford PTB tokenizer (lower case, through `java`), then
    punctuation tokens dropped. Raises `FileNotFoundError` when no Java runtime is on the PATH.
    """
    require_java()
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    return PTBTokenizer().tokenize(
        {key: [{"caption": caption} for caption in values] for key, values in captions.items()}
    )


@functools.cache
def _meteor_scorer():
    """One METEOR scorer per process: its Java server takes seconds to load its paraphrase table, then scores fast."""
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()


def caption_metrics(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """
    BLEU-4, METEOR, ROUGE-L and CIDEr-D (as `pycocoevalcap` computes CIDEr) of one predicted caption per image against
    its reference captions, ×100 as papers report them; both sides are PTB-tokenized first ([`ptb_tokenize`]).
    """
    if predictions.keys() != references.keys():
        raise ValueError("Predictions and references must cover the same images")
    if not predictions:
        raise ValueError("No captions to score")
    empty = [key for key, values in references.items() if not values]
    if empty:
        raise ValueError(f"Images without reference captions: {empty[:5]}")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    tokenized_references = ptb_tokenize(references)
    tokenized_predictions = ptb_tokenize({key: [caption] for key, caption in predictions.items()})
    bleu, _ = Bleu(4).compute_score(tokenized_references, tokenized_predictions, verbose=0)
    scores = {"BLEU-4": bleu[3]}
    for name, scorer in (("METEOR", _meteor_scorer()), ("ROUGE-L", Rouge()), ("CIDEr", Cider())):
        scores[name] = scorer.compute_score(tokenized_references, tokenized_predictions)[0]
    return {name: 100 * float(score) for name, score in scores.items()}


@torch.no_grad()
def clip_image_embeddings(clip_model, clip_processor, images: Sequence) -> torch.Tensor:
    """Unit-length CLIP image embeddings of `images` (PIL images or arrays), shape `(len(images), projection_dim)`."""
    pixel_values = clip_processor(images=list(images), return_tensors="pt").pixel_values
    parameter = next(clip_model.parameters())
    features = clip_model.get_image_features(pixel_values=pixel_values.to(parameter.device, parameter.dtype))
    features = getattr(features, "pooler_output", features).float()
    return features / features.norm(dim=-1, keepdim=True)


def clip_image_similarity(clip_model, clip_processor, images: Sequence, others: Sequence) -> list[float]:
    """Cosine similarity ×100 of the CLIP image embeddings of `images[i]` and `others[i]`, one value per pair."""
    if len(images) != len(others):
        raise ValueError(
            f"Expected as many images as others to compare them with, got {len(images)} and {len(others)}"
        )
    pairs = clip_image_embeddings(clip_model, clip_processor, [*images, *others]).split(len(images))
    return (100 * (pairs[0] * pairs[1]).sum(-1)).tolist()


def codebook_usage(codes: Iterable[Iterable[int]], codebook_size: int | None = None) -> dict[str, float]:
    """
    How much of the codebook a set of images uses: `distinct_codes` (codes used at least once), `perplexity`
    (exp of the entropy of the code frequencies: the number of equally used codes with the same entropy) and, with
    `codebook_size`, `usage` (the share of the codebook used, in %).
    """
    counts = Counter(code for row in codes for code in row)
    total = sum(counts.values())
    if not total:
        raise ValueError("No codes to count")
    entropy = -sum(count / total * math.log(count / total) for count in counts.values())
    usage = {"distinct_codes": len(counts), "perplexity": math.exp(entropy)}
    if codebook_size is not None:
        usage["usage"] = 100 * len(counts) / codebook_size
    return usage


__all__ = [
    "caption_metrics",
    "clip_image_embeddings",
    "clip_image_similarity",
    "codebook_usage",
    "gqa_exact_match",
    "normalize_vqa_answer",
    "ptb_tokenize",
    "require_java",
    "vqa_accuracy",
]
