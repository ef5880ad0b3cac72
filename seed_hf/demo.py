"""
The demo page: a Gradio app that shows what SEED does. An image becomes 32 codes in a causal order, the codes draw a
picture back, edited or truncated codes draw another, and with SEED-OPT an image gets a caption and text gets codes.

[`SeedDemo`] holds the models and the plain-Python handlers (testable without a browser); [`build_demo`] lays out the
page around them. Gradio is imported only by `build_demo` (`pip install seed_hf[demo]`).
"""

import functools
import html
import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import PIL.Image
import PIL.ImageDraw
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
)

from .image_processing_seed import SeedImageProcessor
from .modeling_seed_opt import SeedOPTForConditionalGeneration
from .modeling_seed_vision_tokenizer import SeedVisionTokenizer
from .pipeline_seed_decode import SeedDecodePipeline
from .processing_seed import SeedProcessor

# Names shown in the page -> scheduler classes; each is built from the pipeline's own scheduler config.
SCHEDULERS = {
    "PNDM (Stable Diffusion v1.4)": PNDMScheduler,
    "DDIM": DDIMScheduler,
    "DPM-Solver++": DPMSolverMultistepScheduler,
    "Euler": EulerDiscreteScheduler,
    "Euler ancestral": EulerAncestralDiscreteScheduler,
}
DEFAULT_SCHEDULER = next(iter(SCHEDULERS))
# Height of the image boxes in the page, in CSS pixels; pictures are scaled to fit.
IMAGE_HEIGHT = 320

# One coloured cell per code: hue from the code number, so equal codes share a colour.
CODES_CSS = """
.seed-codes { display: grid; grid-template-columns: repeat(8, minmax(0, 1fr)); gap: 4px; }
.seed-code { border-radius: 6px; padding: 4px 2px; text-align: center; font-family: monospace; }
.seed-codes .seed-code span { display: block; color: #fff; }
.seed-codes .seed-code .position { font-size: 0.7em; }
.seed-codes .seed-code .code { font-size: 1.15em; font-weight: bold; }
.seed-code.filled { background: #9ca3af !important; opacity: 0.55; border: 1px dashed #374151; }
"""


def code_colour(code: int) -> str:
    """A CSS colour for `code`: hues a golden angle apart, so neighbouring codes look different."""
    return f"hsl({code * 137.508 % 360:.0f}, 60%, 36%)"


def codes_html(codes: list[int], num_kept: int | None = None) -> str:
    """
    The codes as a labelled grid of coloured cells (position and code number, the code also in `data-code`). Cells
    from `num_kept` on are drawn grey: positions filled in, not kept from the original codes.
    """
    num_kept = len(codes) if num_kept is None else num_kept
    cells = []
    for position, code in enumerate(codes):
        kept = position < num_kept
        cells.append(
            f'<div class="seed-code{"" if kept else " filled"}" data-position="{position}" data-code="{code}" '
            f'style="background: {code_colour(code)}" title="position {position}: code {code}'
            f'{"" if kept else " (filled in)"}">'
            f'<span class="position">#{position}</span><span class="code">{code}</span></div>'
        )
    caption = f"{len(codes)} codes" if num_kept == len(codes) else f"first {num_kept} of {len(codes)} codes kept"
    return f'<div class="seed-codes" aria-label="{html.escape(caption)}">{"".join(cells)}</div>'


def whole_number(value: int | float | None, name: str, minimum: int, maximum: int | None = None) -> int:
    """
    `value`, a number from the page (a float, or None when a box was emptied), as an int in `[minimum, maximum]`;
    otherwise a ValueError naming `name`.
    """
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if not whole or value < minimum or (maximum is not None and value > maximum):
        bounds = f"in [{minimum}, {maximum}]" if maximum is not None else f"at least {minimum}"
        raise ValueError(f"{name} must be a whole number {bounds}, got {value}")
    return int(value)


def example_images(folder: str | Path) -> list[Path]:
    """
    Draw a few simple example pictures (shapes on plain backgrounds, 256x256) into `folder`, once, and return their
    paths: the page offers them to users who have no image at hand.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scenes = {
        "red-circle-on-blue": ((40, 70, 160), "ellipse", (220, 40, 40)),
        "yellow-square-on-green": ((40, 130, 60), "rectangle", (240, 210, 40)),
        "white-circle-on-black": ((15, 15, 20), "ellipse", (235, 235, 235)),
    }
    paths = []
    for name, (background, shape, colour) in scenes.items():
        path = folder / f"{name}.png"
        if not path.exists():
            picture = PIL.Image.new("RGB", (256, 256), background)
            getattr(PIL.ImageDraw.Draw(picture), shape)((64, 64, 192, 192), fill=colour)
            picture.save(path)
        paths.append(path)
    return paths


class SeedDemo:
    r"""
    The models behind the demo page and what its buttons do, in plain Python: every method takes and returns plain
    values (PIL images, lists of ints, strings) and raises a `ValueError` naming what was expected on bad input.

    Args:
        tokenizer ([`SeedVisionTokenizer`]):
            Turns images into codes.
        image_processor ([`SeedImageProcessor`]):
            Prepares images for `tokenizer`.
        decode_pipeline ([`SeedDecodePipeline`]):
            Draws pictures from codes.
        seed_opt ([`SeedOPTForConditionalGeneration`], *optional*):
            Captions images and writes codes from text; the page shows those tabs only with it.
        processor ([`SeedProcessor`], *optional*):
            SEED-OPT's processor; required with `seed_opt`.
    """

    def __init__(
        self,
        tokenizer: SeedVisionTokenizer,
        image_processor: SeedImageProcessor,
        decode_pipeline: SeedDecodePipeline,
        seed_opt: SeedOPTForConditionalGeneration | None = None,
        processor: SeedProcessor | None = None,
    ):
        if (seed_opt is None) != (processor is None):
            raise ValueError("Pass SEED-OPT together with its SeedProcessor, or neither")
        if processor is not None and processor.tokenizer.num_image_tokens != tokenizer.config.codebook_size:
            raise ValueError(
                f"SEED-OPT writes {processor.tokenizer.num_image_tokens} image codes but the SEED tokenizer's "
                f"codebook has {tokenizer.config.codebook_size}: use a SEED-OPT built on this tokenizer"
            )
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.decode_pipeline = decode_pipeline
        self.seed_opt = seed_opt
        self.processor = processor
        # Pipelines by scheduler name, sharing the models; the loaded one serves its own scheduler's name.
        self._pipelines = {
            name: decode_pipeline
            for name, scheduler_class in SCHEDULERS.items()
            if type(decode_pipeline.scheduler) is scheduler_class
        }

    @classmethod
    def from_pretrained(
        cls,
        tokenizer: str | Path,
        decode: str | Path,
        seed_opt: str | Path | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> "SeedDemo":
        """
        Load the models from folders or Hub ids: the SEED tokenizer (with its image processor), a decode pipeline
        (which draws with that tokenizer) and optionally a SEED-OPT folder (model and processor).
        """
        vision_tokenizer = SeedVisionTokenizer.from_pretrained(tokenizer, dtype=dtype, use_safetensors=True)
        image_processor = SeedImageProcessor.from_pretrained(tokenizer)
        decode_pipeline = SeedDecodePipeline.from_pretrained(
            decode, vision_tokenizer=vision_tokenizer, dtype=dtype, use_safetensors=True
        ).to(device)
        model = processor = None
        if seed_opt is not None:
            model = SeedOPTForConditionalGeneration.from_pretrained(seed_opt, dtype=dtype, use_safetensors=True)
            model = model.to(device).eval()
            processor = SeedProcessor.from_pretrained(seed_opt)
        return cls(vision_tokenizer.eval(), image_processor, decode_pipeline, model, processor)

    @property
    def num_codes(self) -> int:
        return self.tokenizer.config.num_query_tokens

    @property
    def codebook_size(self) -> int:
        return self.tokenizer.config.codebook_size

    def tokenize(self, image: PIL.Image.Image | None) -> list[int]:
        """The SEED codes of `image`."""
        if not isinstance(image, PIL.Image.Image):
            raise ValueError("Upload an image (or pick an example) first")
        pixel_values = self.image_processor(image.convert("RGB"), return_tensors="pt").pixel_values
        return self.tokenizer.encode(pixel_values.to(self.tokenizer.device, self.tokenizer.dtype))[0].tolist()

    def image_notes(self, image: PIL.Image.Image) -> list[str]:
        """
        What to know about how `image` is tokenized, for the page's warnings: the image processor resizes every image
        to the tokenizer's square input, so a smaller image is enlarged (blurred) and an elongated one squashed.
        """
        size = self.image_processor.size
        notes = []
        if image.width < size.width or image.height < size.height:
            notes.append(
                f"The image is {image.width}x{image.height}, smaller than the tokenizer's {size.width}x{size.height} "
                "input: it is enlarged, so the codes describe a blurred picture"
            )
        if max(image.width / image.height, image.height / image.width) > 2:
            notes.append(
                f"The image is {image.width}x{image.height}: it is squashed into a square for the tokenizer, so "
                "the codes describe a distorted picture"
            )
        return notes

    def parse_codes(self, text: str) -> list[int]:
        """
        Codes from `text`: a JSON list or numbers separated by spaces or commas, exactly `num_codes` of them, each in
        `[0, codebook_size)`.
        """
        words = [word for word in re.split(r"[\s,\[\]]+", text or "") if word]
        not_numbers = [word for word in words if not word.isdigit()]
        if not_numbers:
            raise ValueError(f"Codes must be whole numbers, got {', '.join(repr(word) for word in not_numbers[:3])}")
        codes = [int(word) for word in words]
        if len(codes) != self.num_codes:
            raise ValueError(f"Expected {self.num_codes} codes, got {len(codes)}")
        for position, code in enumerate(codes):
            if code >= self.codebook_size:
                raise ValueError(f"Code {code} at position {position} is outside [0, {self.codebook_size})")
        return codes

    def truncate(self, codes: list[int], num_kept: int, fill_code: int) -> list[int]:
        """
        Keep the first `num_kept` codes, the causal prefix, and set the others to `fill_code`: the decoder always
        reads all `num_codes`, so the dropped positions need some code.
        """
        num_kept = whole_number(num_kept, "The number of codes kept", 1, self.num_codes)
        fill_code = whole_number(fill_code, "The fill code", 0, self.codebook_size - 1)
        return codes[:num_kept] + [fill_code] * (self.num_codes - num_kept)

    def pipeline_for(self, scheduler: str) -> SeedDecodePipeline:
        """The decode pipeline with the scheduler named `scheduler` (a key of `SCHEDULERS`), sharing the models."""
        if scheduler not in SCHEDULERS:
            raise ValueError(f"Unknown scheduler {scheduler!r}; expected one of {', '.join(SCHEDULERS)}")
        if scheduler not in self._pipelines:
            base = self.decode_pipeline
            # The constructor, not `from_pipe`, which rejects the null embedding (annotated with its base class).
            self._pipelines[scheduler] = SeedDecodePipeline(
                **{**base.components, "scheduler": SCHEDULERS[scheduler].from_config(base.scheduler.config)}
            )
        return self._pipelines[scheduler]

    def draw(
        self,
        codes: list[int],
        steps: int,
        guidance: float,
        seed: int,
        scheduler: str = DEFAULT_SCHEDULER,
        on_step: Callable[[int, int], None] | None = None,
    ) -> PIL.Image.Image:
        """
        Draw a picture from `codes` with `steps` denoising steps of `scheduler` at guidance `guidance`, from the noise
        of `seed`; `on_step(done, total)` is called after each model call (the page's progress bar).
        """
        steps = whole_number(steps, "The number of steps", 1)
        seed = whole_number(seed, "The seed", 0)

        def report_step(pipe, step, timestep, tensors):
            # Some schedulers take more model calls than steps (PNDM repeats its first), so count the pipeline's own.
            on_step(step + 1, pipe.num_timesteps)
            return {}

        return self.pipeline_for(scheduler)(
            codes=[codes],
            num_inference_steps=steps,
            guidance_scale=float(guidance),
            generator=torch.Generator().manual_seed(seed),
            callback_on_step_end=report_step if on_step is not None else None,
        ).images[0]

    def _require_seed_opt(self) -> None:
        if self.seed_opt is None:
            raise ValueError("This needs a SEED-OPT model: start the demo with --seed-opt DIR")

    def caption(self, image: PIL.Image.Image | None, question: str = "", max_new_tokens: int = 20) -> str:
        """SEED-OPT's caption of `image`, or with a `question`, its answer (prompted "Question: ... Answer:")."""
        self._require_seed_opt()
        if not isinstance(image, PIL.Image.Image):
            raise ValueError("Upload an image (or pick an example) first")
        question = (question or "").strip()
        prompt = (
            f"{self.processor.image_token}Question: {question} Answer:" if question else self.processor.image_token
        )
        inputs = self.processor(images=[image.convert("RGB")], text=[prompt], return_tensors="pt")
        inputs = inputs.to(self.seed_opt.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.seed_opt.dtype)
        generated = self.seed_opt.generate(
            **inputs, max_new_tokens=whole_number(max_new_tokens, "The number of new tokens", 1)
        )
        new_tokens = generated[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)[0].strip()

    def codes_from_text(self, prompt: str) -> list[int]:
        """The codes SEED-OPT writes for `prompt` (greedy decoding of one image block)."""
        self._require_seed_opt()
        if not (prompt or "").strip():
            raise ValueError("Write a prompt first")
        inputs = self.processor.tokenizer([prompt.strip()], return_tensors="pt").to(self.seed_opt.device)
        return self.seed_opt.generate_images(**inputs)[0].tolist()


def build_demo(
    demo: SeedDemo,
    default_steps: int = 50,
    default_guidance: float = 7.5,
    examples: list[str | Path] | None = None,
):
    """
    The Gradio page around `demo`: Tokenize & reconstruct, Edit codes and, with SEED-OPT, Caption / ask and Draw from
    text. Bad input shows as an error message in the page. Model calls share one queue, one at a time. Launch it with
    `.launch()`; `examples` defaults to a few drawn pictures.

    Example:

    ```python
    >>> from seed_hf.demo import SeedDemo, build_demo
    >>> demo = SeedDemo.from_pretrained("seed-tokenizer-v1", "seed-decode-v1", "seed-opt-2.7b")  # doctest: +SKIP
    >>> build_demo(demo, default_steps=25).launch(server_name="127.0.0.1", server_port=7860)  # doctest: +SKIP
    ```
    """
    import gradio as gr

    if examples is None:
        examples = example_images(Path(tempfile.gettempdir()) / "seed-hf-demo-examples")

    def shown_in_page(handler: Callable) -> Callable:
        """
        `handler`, with the ValueErrors it raises shown as an error message in the page. The message stays until it is
        closed: Gradio groups messages of one kind and closes the group when its first message times out, which would
        hide a second error that came just before then.
        """

        @functools.wraps(handler)  # keeps the signature, where Gradio finds the progress parameter
        def run(*args, **kwargs):
            try:
                return handler(*args, **kwargs)
            except ValueError as error:
                raise gr.Error(str(error), duration=None, print_exception=False) from error

        return run

    def progress_reporter(progress: "gr.Progress") -> Callable[[int, int], None]:
        return lambda done, total: progress((done, total), desc="Drawing", unit="steps")

    @shown_in_page
    def tokenize(image):
        codes = demo.tokenize(image)
        for note in demo.image_notes(image):
            gr.Warning(note)
        return codes, codes_html(codes), json.dumps(codes), json.dumps(codes)

    # A `gr.Progress()` default is how Gradio's handlers ask for a progress bar.
    @shown_in_page
    def reconstruct(codes, steps, guidance, seed, scheduler, progress=gr.Progress()):  # noqa: B008
        return demo.draw(codes, steps, guidance, seed, scheduler, on_step=progress_reporter(progress))

    @shown_in_page
    def redraw(text, num_kept, fill_code, steps, guidance, seed, scheduler, progress=gr.Progress()):  # noqa: B008
        codes = demo.truncate(demo.parse_codes(text), num_kept, fill_code)
        picture = demo.draw(codes, steps, guidance, seed, scheduler, on_step=progress_reporter(progress))
        return codes_html(codes, int(num_kept)), picture

    @shown_in_page
    def caption(image, question, max_new_tokens):
        return demo.caption(image, question, max_new_tokens)

    @shown_in_page
    def codes_from_text(prompt):
        codes = demo.codes_from_text(prompt)
        return codes, codes_html(codes), json.dumps(codes)

    def image_input(elem_id: str, examples_id: str | None = None) -> "gr.Image":
        """An image to upload or paste, with the example pictures under it."""
        image = gr.Image(
            type="pil", label="Image", sources=["upload", "clipboard"], elem_id=elem_id, height=IMAGE_HEIGHT
        )
        gr.Examples([[str(path)] for path in examples], inputs=[image], label="Examples", elem_id=examples_id)
        return image

    def drawn_picture(label: str, elem_id: str) -> "gr.Image":
        """Where a picture drawn from codes appears."""
        return gr.Image(type="pil", label=label, elem_id=elem_id, height=IMAGE_HEIGHT)

    def codes_view(grid_id: str, json_id: str | None = None) -> tuple["gr.HTML", "gr.Code"]:
        """Codes shown twice: as the coloured grid, and as JSON to copy."""
        grid = gr.HTML(css_template=CODES_CSS, elem_id=grid_id)
        return grid, gr.Code(language="json", lines=1, label="Codes (JSON)", buttons=["copy"], elem_id=json_id)

    with gr.Blocks(title=f"SEED: images as {demo.num_codes} codes") as page:
        gr.Markdown(
            f"# SEED: an image as {demo.num_codes} codes\n"
            f"SEED turns an image into {demo.num_codes} discrete codes (from a codebook of {demo.codebook_size}) in a "
            "causal order, and draws a picture back from the codes with Stable Diffusion."
            + ("" if demo.seed_opt is not None else " Start with `--seed-opt DIR` for captions and drawing from text.")
        )
        with gr.Accordion("Drawing settings", open=True):
            with gr.Row():
                steps = gr.Slider(1, 100, value=default_steps, step=1, label="Steps")
                guidance = gr.Slider(1.0, 15.0, value=default_guidance, step=0.5, label="Guidance")
                seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                scheduler = gr.Dropdown(list(SCHEDULERS), value=DEFAULT_SCHEDULER, label="Scheduler")
        settings = [steps, guidance, seed, scheduler]
        codes_state = gr.State([])

        with gr.Tab("Tokenize & reconstruct", id="tokenize"):
            with gr.Row():
                with gr.Column():
                    image = image_input("input-image", examples_id="examples")
                    tokenize_button = gr.Button("Tokenize & reconstruct", variant="primary", elem_id="tokenize")
                reconstruction = drawn_picture("Drawn back from the codes", "reconstruction")
            codes_grid, codes_json = codes_view("codes", json_id="codes-json")

        with gr.Tab("Edit codes", id="edit"):
            gr.Markdown(
                "Change any codes and redraw, or keep only the first *k*: SEED's codes are causal, so a prefix is a "
                "coarser description of the same image. The decoder reads all codes, so the dropped positions get the "
                "fill code (grey)."
            )
            with gr.Row():
                with gr.Column():
                    edited_codes = gr.Textbox(
                        label=f"Codes ({demo.num_codes} numbers in [0, {demo.codebook_size}))",
                        lines=3,
                        placeholder="Tokenize an image first, or paste codes",
                        elem_id="edited-codes",
                    )
                    with gr.Row():
                        num_kept = gr.Slider(
                            1,
                            demo.num_codes,
                            value=demo.num_codes,
                            step=1,
                            label="Keep the first k",
                            elem_id="num-kept",
                        )
                        fill_code = gr.Number(value=0, precision=0, minimum=0, label="Fill code")
                    redraw_button = gr.Button("Redraw", variant="primary", elem_id="redraw")
                redrawn = drawn_picture("Drawn from the edited codes", "redrawn")
            edited_grid = gr.HTML(css_template=CODES_CSS, elem_id="edited-grid")

        if demo.seed_opt is not None:
            with gr.Tab("Caption / ask", id="caption"):
                with gr.Row():
                    with gr.Column():
                        caption_image = image_input("caption-image")
                        question = gr.Textbox(label="Question (empty: a caption)", elem_id="question")
                        max_new_tokens = gr.Slider(1, 64, value=20, step=1, label="Max new tokens")
                        caption_button = gr.Button("Caption / answer", variant="primary", elem_id="caption-button")
                    answer = gr.Textbox(label="SEED-OPT says", lines=3, elem_id="answer")
            with gr.Tab("Draw from text", id="draw"):
                with gr.Row():
                    with gr.Column():
                        prompt = gr.Textbox(label="Prompt", value="A photo of a red circle.", elem_id="prompt")
                        draw_button = gr.Button("Write codes & draw", variant="primary", elem_id="draw-button")
                    drawn = drawn_picture("Drawn from SEED-OPT's codes", "drawn")
                text_codes_state = gr.State([])
                text_codes_grid, text_codes_json = codes_view("text-codes")

        # Every model call waits its turn in one queue. Progress (and an error) shows on the picture being drawn
        # only, so a failed call never covers the inputs, such as the codes being edited.
        queued = dict(concurrency_id="models", concurrency_limit=1)
        tokenize_button.click(
            tokenize,
            [image],
            [codes_state, codes_grid, codes_json, edited_codes],
            show_progress_on=[reconstruction],
            **queued,
        ).success(reconstruct, [codes_state, *settings], [reconstruction], **queued)
        redraw_button.click(
            redraw,
            [edited_codes, num_kept, fill_code, *settings],
            [edited_grid, redrawn],
            show_progress_on=[redrawn],
            **queued,
        )
        if demo.seed_opt is not None:
            caption_button.click(caption, [caption_image, question, max_new_tokens], [answer], **queued)
            draw_button.click(
                codes_from_text,
                [prompt],
                [text_codes_state, text_codes_grid, text_codes_json],
                show_progress_on=[drawn],
                **queued,
            ).success(reconstruct, [text_codes_state, *settings], [drawn], **queued)
    return page.queue(default_concurrency_limit=1)


__all__ = ["SCHEDULERS", "SeedDemo", "build_demo", "codes_html", "example_images"]
