"""
The demo page (`seed_hf.demo`, `seed-hf demo`, `app.py`) with tiny models: its handlers in plain Python, then the page
served on 127.0.0.1 and driven in headless Chromium through Playwright, 2 steps at 64x64.
"""

import argparse
import ast
import json
import runpy
import socket
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from seed_hf import SeedImageProcessor
from seed_hf.commands import demo as demo_command
from seed_hf.demo import SCHEDULERS, SeedDemo, build_demo, code_colour, codes_html, example_images

from conftest import REPO_ROOT, tiny_tokenizer
from seed_opt_helpers import tiny_processor, tiny_seed_opt
from test_pipeline_seed_decode import tiny_pipeline
from text_helpers import make_seed_opt_tokenizer

STEPS = 2
CHROMIUM = Path("/usr/bin/chromium")
# Debian's Chromium as root, on a machine with no network: see `.ci/run`.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Model calls of 2 steps at 64x64 take well under a second; the page's first load a few.
BROWSER_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module", autouse=True)
def no_gradio_analytics():
    """Gradio reports usage and checks its version online unless told not to: tests stay offline."""
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        yield


def picture(colour=(200, 30, 30), size=(100, 80)) -> PIL.Image.Image:
    return PIL.Image.new("RGB", size, colour)


@pytest.fixture(scope="module")
def model_folders(tmp_path_factory) -> dict[str, Path]:
    """Saved tiny models, as `seed-hf demo` and `app.py` load them: tokenizer, decode pipeline, SEED-OPT."""
    root = tmp_path_factory.mktemp("demo-models")
    tiny_tokenizer().save_pretrained(root / "tokenizer")
    SeedImageProcessor(size={"height": 28, "width": 28}).save_pretrained(root / "tokenizer")
    tiny_pipeline().save_pretrained(root / "decode")
    text_tokenizer = make_seed_opt_tokenizer(root / "text-tokenizer")
    tiny_seed_opt(text_tokenizer).save_pretrained(root / "seed-opt")
    tiny_processor(text_tokenizer).save_pretrained(root / "seed-opt")
    return {name: root / name for name in ("tokenizer", "decode", "seed-opt")}


@pytest.fixture(scope="module")
def seed_demo(model_folders) -> SeedDemo:
    demo = SeedDemo.from_pretrained(model_folders["tokenizer"], model_folders["decode"], model_folders["seed-opt"])
    demo.decode_pipeline.set_progress_bar_config(disable=True)
    return demo


def test_tokenize_gives_the_tokenizers_codes(seed_demo):
    image = picture()
    pixel_values = seed_demo.image_processor(image, return_tensors="pt").pixel_values
    expected = seed_demo.tokenizer.encode(pixel_values)[0].tolist()
    assert seed_demo.tokenize(image) == expected and len(expected) == 32
    assert seed_demo.tokenize(picture(size=(30, 30)).convert("RGBA")) == seed_demo.tokenize(picture(size=(30, 30)))
    with pytest.raises(ValueError, match="Upload an image"):
        seed_demo.tokenize(None)


def test_image_notes_warn_of_enlarged_or_squashed_images(seed_demo):
    assert seed_demo.image_notes(picture(size=(28, 28))) == []
    assert seed_demo.image_notes(picture(size=(20, 30))) == [
        "The image is 20x30, smaller than the tokenizer's 28x28 input: it is enlarged, so the codes describe a "
        "blurred picture"
    ]
    (note,) = seed_demo.image_notes(picture(size=(100, 40)))
    assert note.startswith("The image is 100x40: it is squashed into a square")
    assert len(seed_demo.image_notes(picture(size=(10, 30)))) == 2


def test_draw_is_the_decode_pipeline_with_progress(seed_demo):
    codes = seed_demo.tokenize(picture())
    steps_seen = []
    drawn = seed_demo.draw(codes, STEPS, 7.5, 3, on_step=lambda done, total: steps_seen.append((done, total)))
    expected = seed_demo.decode_pipeline(
        codes=[codes], num_inference_steps=STEPS, guidance_scale=7.5, generator=torch.Generator().manual_seed(3)
    ).images[0]
    assert drawn.size == (64, 64)
    assert np.array_equal(np.asarray(drawn), np.asarray(expected))
    # PNDM calls the UNet once more than the steps asked for.
    assert steps_seen == [(1, STEPS + 1), (2, STEPS + 1), (3, STEPS + 1)]
    with pytest.raises(ValueError, match="number of steps must be a whole number at least 1, got 0"):
        seed_demo.draw(codes, 0, 7.5, 0)
    for seed in (None, -1, 1.5):  # an emptied box, a negative or fractional number
        with pytest.raises(ValueError, match=f"seed must be a whole number at least 0, got {seed}"):
            seed_demo.draw(codes, STEPS, 7.5, seed)


def test_every_scheduler_draws_and_shares_the_models(seed_demo):
    codes = list(range(32))
    for name, scheduler_class in SCHEDULERS.items():
        pipe = seed_demo.pipeline_for(name)
        assert isinstance(pipe.scheduler, scheduler_class) and pipe.unet is seed_demo.decode_pipeline.unet
        assert pipe is seed_demo.pipeline_for(name)
        assert seed_demo.draw(codes, STEPS, 2.0, 0, name).size == (64, 64)
    with pytest.raises(ValueError, match="Unknown scheduler 'LMS'; expected one of PNDM"):
        seed_demo.pipeline_for("LMS")


def test_parse_codes(seed_demo):
    codes = list(range(32))
    assert seed_demo.parse_codes(json.dumps(codes)) == codes
    assert seed_demo.parse_codes(" ".join(map(str, codes)) + "\n") == codes
    assert seed_demo.parse_codes(", ".join(map(str, codes))) == codes
    with pytest.raises(ValueError, match="Expected 32 codes, got 3"):
        seed_demo.parse_codes("1 2 3")
    with pytest.raises(ValueError, match="Expected 32 codes, got 0"):
        seed_demo.parse_codes("")
    with pytest.raises(ValueError, match="whole numbers, got 'cat', '-1'"):
        seed_demo.parse_codes("1 cat -1 2.5")
    with pytest.raises(ValueError, match=r"Code 64 at position 31 is outside \[0, 64\)"):
        seed_demo.parse_codes(" ".join(map(str, codes[:-1] + [64])))


def test_truncate_keeps_the_causal_prefix(seed_demo):
    codes = list(range(32))
    assert seed_demo.truncate(codes, 4, 9) == [0, 1, 2, 3] + [9] * 28
    assert seed_demo.truncate(codes, 32, 9) == codes
    assert seed_demo.truncate(codes, 4.0, 9.0) == seed_demo.truncate(codes, 4, 9)  # as sliders send them
    with pytest.raises(ValueError, match=r"codes kept must be a whole number in \[1, 32\], got 0"):
        seed_demo.truncate(codes, 0, 9)
    with pytest.raises(ValueError, match=r"fill code must be a whole number in \[0, 63\], got 64"):
        seed_demo.truncate(codes, 4, 64)
    with pytest.raises(ValueError, match="fill code must be a whole number in .*, got None"):
        seed_demo.truncate(codes, 4, None)


def test_codes_html_labels_every_code():
    codes = [5, 5, 17] + [0] * 29
    grid = codes_html(codes, num_kept=3)
    assert grid.count('class="seed-code"') == 3 and grid.count('class="seed-code filled"') == 29
    assert 'data-position="2" data-code="17"' in grid and "first 3 of 32 codes kept" in grid
    # Equal codes, equal colours.
    assert grid.count(f"background: {code_colour(5)}") == 2 and code_colour(5) != code_colour(6)


def test_caption_and_answer_are_seed_opts(seed_demo):
    image = picture()
    for question, prompt in (("", "<image>"), ("What colour?", "<image>Question: What colour? Answer:")):
        inputs = seed_demo.processor(images=[image], text=[prompt], return_tensors="pt")
        generated = seed_demo.seed_opt.generate(**inputs, max_new_tokens=4)[:, inputs.input_ids.shape[1] :]
        expected = seed_demo.processor.batch_decode(generated, skip_special_tokens=True)[0].strip()
        assert seed_demo.caption(image, question, max_new_tokens=4) == expected


def test_codes_from_text_are_generate_images(seed_demo):
    expected = seed_demo.seed_opt.generate_images(
        **seed_demo.processor.tokenizer(["a red circle"], return_tensors="pt")
    )
    assert seed_demo.codes_from_text(" a red circle ") == expected[0].tolist()
    with pytest.raises(ValueError, match="Write a prompt first"):
        seed_demo.codes_from_text("  ")


def test_without_seed_opt_caption_and_text_need_it(seed_demo):
    demo = SeedDemo(seed_demo.tokenizer, seed_demo.image_processor, seed_demo.decode_pipeline)
    for call in (lambda: demo.caption(picture()), lambda: demo.codes_from_text("a")):
        with pytest.raises(ValueError, match="start the demo with --seed-opt DIR"):
            call()
    with pytest.raises(ValueError, match="together with its SeedProcessor"):
        SeedDemo(seed_demo.tokenizer, seed_demo.image_processor, seed_demo.decode_pipeline, seed_demo.seed_opt)


def test_seed_opt_of_another_codebook_is_refused(seed_demo, tmp_path):
    other = tiny_processor(make_seed_opt_tokenizer(tmp_path, num_image_tokens=32))
    with pytest.raises(ValueError, match="writes 32 image codes but the SEED tokenizer's codebook has 64"):
        SeedDemo(seed_demo.tokenizer, seed_demo.image_processor, seed_demo.decode_pipeline, seed_demo.seed_opt, other)


def test_example_images_are_drawn_once(tmp_path):
    paths = example_images(tmp_path)
    assert len(paths) == 3 and all(PIL.Image.open(path).size == (256, 256) for path in paths)
    paths[0].write_bytes(b"kept")
    assert example_images(tmp_path) == paths and paths[0].read_bytes() == b"kept"


def test_page_has_the_seed_opt_tabs_only_with_seed_opt_and_queues_every_model_call(seed_demo, tmp_path):
    gr = pytest.importorskip("gradio")
    examples = example_images(tmp_path)
    without = SeedDemo(seed_demo.tokenizer, seed_demo.image_processor, seed_demo.decode_pipeline)
    # Tabs, and the model calls of their buttons in order ("reconstruct" draws the codes the previous call gave).
    for demo, expected_tabs, expected_calls in (
        (
            seed_demo,
            ["Tokenize & reconstruct", "Edit codes", "Caption / ask", "Draw from text"],
            ["tokenize", "reconstruct", "redraw", "caption", "codes_from_text", "reconstruct"],
        ),
        (without, ["Tokenize & reconstruct", "Edit codes"], ["tokenize", "reconstruct", "redraw"]),
    ):
        page = build_demo(demo, default_steps=STEPS, examples=examples)
        assert [block.label for block in page.blocks.values() if isinstance(block, gr.Tab)] == expected_tabs
        # One queue for every model call, one call at a time: the models are shared.
        calls = [event for event in page.fns.values() if event.name in expected_calls]
        assert [event.name for event in calls] == expected_calls
        assert all(
            event.queue and event.concurrency_id == "models" and event.concurrency_limit == 1 for event in calls
        )


def test_errors_in_the_page_stay_until_closed(seed_demo, tmp_path):
    # Gradio closes a group of messages when the first one times out, which hid an error that came just before.
    gr = pytest.importorskip("gradio")
    page = build_demo(seed_demo, default_steps=STEPS, examples=example_images(tmp_path))
    redraw = next(event.fn for event in page.fns.values() if event.name == "redraw")
    with pytest.raises(gr.Error, match="Expected 32 codes, got 3") as raised:
        redraw("1 2 3", 32, 0, STEPS, 7.5, 0, next(iter(SCHEDULERS)))
    assert raised.value.duration is None


# `seed-hf demo`


def demo_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    demo_command.register(parser.add_subparsers())
    return parser.parse_args(["demo", *argv])


def test_demo_command_imports_no_library_at_start_up():
    """`seed-hf`'s start-up imports the command module: gradio, torch and the models load only in `run`."""
    tree = ast.parse(Path(demo_command.__file__).read_text())
    imported = [alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module for node in tree.body if isinstance(node, ast.ImportFrom)]
    assert imported == ["argparse", None]  # and `from . import resolve_pretrained_path`


def test_demo_command_checks_its_folders(model_folders, tmp_path):
    folders = ["--tokenizer", str(model_folders["tokenizer"]), "--decode", str(model_folders["decode"])]
    args = demo_args("--tokenizer", str(model_folders["tokenizer"]), "--decode", str(tmp_path / "missing"))
    with pytest.raises(
        FileNotFoundError, match=f"no such file or folder: {tmp_path / 'missing'} .*SeedDecodePipeline"
    ):
        args.run(args)
    args = demo_args(*folders, "--seed-opt", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="no such file or folder: .*missing .*SEED-OPT folder"):
        args.run(args)
    args = demo_args(*folders, "--steps", "0")
    with pytest.raises(ValueError, match=r"--steps must be in \[1, 100\], got 0"):
        args.run(args)


def test_demo_command_without_gradio_says_how_to_install_it(model_folders, monkeypatch):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio raises ImportError
    args = demo_args("--tokenizer", str(model_folders["tokenizer"]), "--decode", str(model_folders["decode"]))
    with pytest.raises(ImportError, match=r"seed-hf demo needs gradio: pip install 'seed_hf\[demo\]'"):
        args.run(args)


def test_demo_command_serves_the_page(model_folders, monkeypatch):
    gr = pytest.importorskip("gradio")
    launched = {}

    def launch(page, **kwargs):
        launched.update(kwargs, page=page)

    monkeypatch.setattr(gr.Blocks, "launch", launch)
    args = demo_args(
        "--tokenizer",
        str(model_folders["tokenizer"]),
        "--decode",
        str(model_folders["decode"]),
        "--seed-opt",
        str(model_folders["seed-opt"]),
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
        "--share",
        "--device",
        "cpu",
        "--steps",
        "3",
    )
    assert args.run(args) == 0
    assert {key: launched[key] for key in ("server_name", "server_port", "share")} == {
        "server_name": "0.0.0.0",
        "server_port": 8080,
        "share": True,
    }
    labels = {block.label: block for block in launched["page"].blocks.values() if hasattr(block, "label")}
    assert "Draw from text" in labels and labels["Steps"].value == 3


def test_space_app_builds_the_page_from_the_environment(model_folders, monkeypatch):
    gr = pytest.importorskip("gradio")
    monkeypatch.setenv("SEED_TOKENIZER", str(model_folders["tokenizer"]))
    monkeypatch.setenv("SEED_DECODE", str(model_folders["decode"]))
    monkeypatch.setenv("SEED_OPT", "")
    page = runpy.run_path(str(REPO_ROOT / "app.py"), run_name="app")["demo"]
    assert isinstance(page, gr.Blocks)
    assert "Caption / ask" not in [block.label for block in page.blocks.values() if isinstance(block, gr.Tab)]


# The page in a real browser


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> list[Path]:
    return example_images(tmp_path_factory.mktemp("examples"))


@pytest.fixture(scope="module")
def page_url(seed_demo, examples):
    """The page with the tiny models (2 steps), served on a free port of 127.0.0.1 for this module's tests."""
    pytest.importorskip("gradio")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    page = build_demo(seed_demo, default_steps=STEPS, examples=examples)
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    page.close()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
    )
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's chromium package (.ci/run does, as root)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    """Where the browser tests save a screenshot of each tab (a test artifact)."""
    folder = tmp_path_factory.mktemp("demo-screenshots")
    print(f"screenshots of the demo page: {folder}")
    return folder


@pytest.fixture
def tab(browser, page_url):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(BROWSER_TIMEOUT_MS)
    page.goto(page_url)
    yield page
    page.close()


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def replace_text(page, selector: str, shown: str, text: str) -> None:
    """
    Type `text` into the box at `selector`, which shows `shown`. For about 0.1 s after a tab is shown, Gradio can still
    write a box's previous value back over what was typed (1 time in 40 here): type until the box keeps the text.
    """
    box = page.locator(selector)
    pytest.importorskip("playwright.sync_api").expect(box).to_have_value(shown)
    for _ in range(3):
        box.fill(text)
        page.wait_for_timeout(300)
        if box.input_value() == text:
            return
    raise AssertionError(f"{selector} does not keep the text typed into it: it shows {box.input_value()!r}")


def shown_image_size(page, selector: str) -> tuple[int, int]:
    image = page.locator(f"{selector} img")
    image.wait_for()
    image.evaluate("image => image.decode()")
    return tuple(image.evaluate("image => [image.naturalWidth, image.naturalHeight]"))


def shown_codes(page, selector: str) -> list[int]:
    cells = page.locator(f"{selector} .seed-code")
    cells.nth(31).wait_for()
    return [int(code) for code in cells.evaluate_all("cells => cells.map(cell => cell.dataset.code)")]


def save_screenshot(page, folder: Path, name: str) -> None:
    path = folder / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    print(f"saved {path}")


def upload(page, selector: str, image: PIL.Image.Image, folder: Path) -> None:
    path = folder / "upload.png"
    image.save(path)
    page.locator(f"{selector} input[type=file]").set_input_files(path)


def test_browser_tokenize_and_reconstruct(tab, seed_demo, screenshots, tmp_path):
    image = picture()
    upload(tab, "#input-image", image, tmp_path)
    tab.locator("#tokenize").click()

    codes = seed_demo.tokenize(image)
    assert shown_codes(tab, "#codes") == codes
    expect = pytest.importorskip("playwright.sync_api").expect
    expect(tab.locator("#codes-json .cm-content")).to_have_text(json.dumps(codes))  # waits for the editor
    assert shown_image_size(tab, "#reconstruction") == (64, 64)
    save_screenshot(tab, screenshots, "tokenize-and-reconstruct")

    # A longer drawing shows its progress, in model calls (PNDM makes one more than the steps).
    tab.get_by_label("Steps").first.fill("40")
    tab.get_by_label("Steps").first.press("Enter")
    tab.locator("#tokenize").click()
    tab.locator("#reconstruction").get_by_text("/41 steps").wait_for()
    tab.locator("#reconstruction").get_by_text("/41 steps").wait_for(state="detached")
    assert shown_image_size(tab, "#reconstruction") == (64, 64)


def test_browser_pick_an_example(tab, seed_demo, examples):
    tab.locator("#examples button").first.click()
    tab.locator("#input-image img").wait_for()
    tab.locator("#tokenize").click()
    with PIL.Image.open(examples[0]) as example:
        assert shown_codes(tab, "#codes") == seed_demo.tokenize(example)
    assert shown_image_size(tab, "#reconstruction") == (64, 64)


def test_browser_edit_a_code_and_redraw(tab, seed_demo, screenshots, tmp_path):
    upload(tab, "#input-image", picture(), tmp_path)
    tab.locator("#tokenize").click()
    codes = shown_codes(tab, "#codes")
    open_tab(tab, "Edit codes")
    edited = [(codes[0] + 1) % 64, *codes[1:]]
    replace_text(tab, "#edited-codes textarea", json.dumps(codes), " ".join(map(str, edited)))
    tab.locator("#redraw").click()
    tab.locator(f'#edited-grid .seed-code[data-position="0"][data-code="{edited[0]}"]').wait_for()
    assert shown_codes(tab, "#edited-grid") == edited
    assert shown_image_size(tab, "#redrawn") == (64, 64)

    # Keep the first 4 codes: the other 28 show as filled in with the fill code.
    tab.locator("#num-kept input[type=number]").fill("4")
    tab.locator("#num-kept input[type=number]").press("Enter")
    tab.locator("#redraw").click()
    tab.locator("#edited-grid .seed-code.filled").nth(27).wait_for()
    assert shown_codes(tab, "#edited-grid") == edited[:4] + [0] * 28
    assert tab.locator("#edited-grid .seed-code.filled").count() == 28
    save_screenshot(tab, screenshots, "edit-codes")


def test_browser_bad_input_shows_an_error(tab, screenshots, tmp_path):
    tab.locator("#tokenize").click()
    tab.get_by_text("Upload an image (or pick an example) first").wait_for()
    # A usable but small image: a warning, and the codes all the same.
    upload(tab, "#input-image", picture(size=(20, 20)), tmp_path)
    tab.locator("#tokenize").click()
    tab.get_by_text("The image is 20x20, smaller than the tokenizer's 28x28 input").wait_for()
    codes = shown_codes(tab, "#codes")
    assert len(codes) == 32

    open_tab(tab, "Edit codes")
    replace_text(tab, "#edited-codes textarea", json.dumps(codes), "1 2 3")
    tab.locator("#redraw").click()
    tab.get_by_text("Expected 32 codes, got 3").wait_for()
    assert tab.get_by_text("Upload an image (or pick an example) first").is_visible()  # errors stay until closed
    assert tab.locator("#redrawn img").count() == 0
    save_screenshot(tab, screenshots, "error")
    # The page still works after the errors.
    tab.locator("#edited-codes textarea").fill(" ".join(["7"] * 32))
    tab.locator("#redraw").click()
    assert shown_image_size(tab, "#redrawn") == (64, 64)


def test_browser_caption(tab, seed_demo, screenshots, tmp_path):
    image = picture((20, 200, 40))
    open_tab(tab, "Caption / ask")
    upload(tab, "#caption-image", image, tmp_path)
    tab.locator("#question textarea").fill("What colour?")
    tab.locator("#caption-button").click()
    expected = seed_demo.caption(image, "What colour?")
    answer = tab.locator("#answer textarea")
    tab.wait_for_function("element => element.value.length > 0", arg=answer.element_handle())
    assert answer.input_value() == expected
    save_screenshot(tab, screenshots, "caption")


def test_browser_draw_from_text(tab, seed_demo, screenshots):
    open_tab(tab, "Draw from text")
    replace_text(tab, "#prompt textarea", "A photo of a red circle.", "a blue square")
    tab.locator("#draw-button").click()
    assert shown_codes(tab, "#text-codes") == seed_demo.codes_from_text("a blue square")
    assert shown_image_size(tab, "#drawn") == (64, 64)
    save_screenshot(tab, screenshots, "draw-from-text")
