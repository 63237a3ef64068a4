# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The README's and docs/' code blocks, run or checked as written, so that they cannot rot.

Each fenced ```python and ```bash / ```sh / ```shell block of README.md and docs/*.md is one test:

- A Python block runs for real, alone (a block that uses a name it does not define fails), in a folder holding tiny
  pipelines under the names the docs load (`ddpm-digits`, `ddpm-digits-class`, `ddpm-digits-text`), with Hub ids
  served by tests/support/hub_server.py. Only its sizes are cut: see TINY_PYTHON.
- In a shell block, every command line's program must exist (the `ddpm-hf` console script and its command, a
  `python -m` module or a script of the repository, `accelerate launch`, a Makefile target and its variables, pip)
  and its flags must parse with the real parser: the trainer's (with its presets and range checks), the CLI's,
  accelerate's launch parser and then the launched script's, a benchmark's own, pip's install command. Parsing runs
  nothing, so a slow command (a training, a benchmark, an install) is checked as surely as a fast one.
- The fast commands (`ddpm-hf sample|forward|nll|fid`) also run for real, their sizes cut (TINY_FLAGS).

The Python blocks, the commands that run and the benchmarks' parsers (whose modules do things at import) go to ONE
Python process that imports torch and diffusers once and forks a child per job (support.processes.fork_runner);
the other parsers run in this process. A block that cannot be checked needs a marker on the line before it, with its
reason:

    <!-- docs-test: skip: downloads CIFAR-10 -->

and a block that is neither checked nor marked fails, saying so.
"""

import configparser
import contextlib
import functools
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.hub_server import HubServer
from support.models import tiny_text_to_image_pipeline, tiny_unet
from support.processes import fork_runner, run_forked

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = ("bash", "sh", "shell")
HUB_TOKEN = "hf_docs_test_token_Qm4vT8pX2c"

# The sizes a doc's call uses, cut to what a tiny pipeline needs to run every line of it.
TINY_PYTHON = [(re.compile(r"\b(num_inference_steps|timesteps)=\d+"), r"\1=2"),
               (re.compile(r"\bnum_images=\d+"), "num_images=4"),
               (re.compile(r"\bbatch_size=\d+"), "batch_size=2")]
RUN_FOR_REAL = ("sample", "forward", "nll", "fid")  # the `ddpm-hf` commands fast enough on a tiny pipeline
SAMPLES = ("sample", "nll", "fid")  # those that run a chain over images: appended TINY_FLAGS cut their sizes
TINY_FLAGS = ["--steps", "2", "--num-images", "4"]  # fid needs 2 images at least, for a covariance


# ----------------------------------------------------------------------------------------------------------------
# The blocks of the docs
# ----------------------------------------------------------------------------------------------------------------
FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*docs-test:(.*?)-->\s*$")


@dataclass
class Block:
    doc: str  # path relative to the repository
    line: int  # the opening fence's line, from 1
    language: str
    code: str
    skip: str | None = None  # the reason its marker gives
    problem: str | None = None  # a malformed marker

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def extract_blocks(text: str, doc: str) -> tuple[list[Block], list[str]]:
    """The fenced blocks of a Markdown text, each with the marker on the line before it; and the markers that stand
    before no block (a mistake: they would skip nothing)."""
    lines = text.split("\n")
    blocks, orphans, index = [], [], 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if not fence:
            if MARKER.match(lines[index]) and not _next_is_fence(lines, index):
                orphans.append(f"{doc}:{index + 1}: a docs-test marker must be the line right before a code block")
            index += 1
            continue
        end = next((j for j in range(index + 1, len(lines)) if lines[j].strip() == "```"), len(lines))
        block = Block(doc, index + 1, fence.group(2).lower(), textwrap.dedent("\n".join(lines[index + 1:end])))
        marker = MARKER.match(lines[index - 1]) if index else None
        if marker:
            kind, _, reason = marker.group(1).partition(":")
            if kind.strip() != "skip" or not reason.strip():
                block.problem = (f"{doc}:{index}: a docs-test marker reads `<!-- docs-test: skip: REASON -->`, got"
                                 f" {lines[index - 1].strip()!r}")
            block.skip = reason.strip()
        blocks.append(block)
        index = end + 1
    return blocks, orphans


def _next_is_fence(lines, index) -> bool:
    return index + 1 < len(lines) and bool(FENCE.match(lines[index + 1]))


def checked_blocks() -> list[Block]:
    blocks = []
    for path in DOCS:
        found, _ = extract_blocks(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
        blocks += [block for block in found if block.language == "python" or block.language in SHELL_LANGUAGES]
    return blocks


BLOCKS = checked_blocks()


# ----------------------------------------------------------------------------------------------------------------
# Shell commands: the program, and its flags against the real parser
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Checks:
    """What a block needs: the problems found in this process, and the jobs of the forked runner (name -> argv)."""
    problems: list[str] = field(default_factory=list)
    jobs: dict = field(default_factory=dict)
    written: list[str] = field(default_factory=list)  # the output folders its trainer commands name

    def job(self, what: str, argv: list[str]) -> None:
        self.jobs[what] = argv


def command_lines(code: str) -> list[list[str]]:
    """The words of each command line of a shell block: continuations joined, comments and blank lines dropped."""
    return [words for line in code.replace("\\\n", " ").split("\n") if (words := shlex.split(line, comments=True))]


def check_command(words: list[str], checks: Checks) -> None:
    while words and re.match(r"^[A-Za-z_]\w*=", words[0]):  # VAR=value before the program
        words = words[1:]
    program, args = words[0], words[1:]
    name = program.removeprefix(".venv/bin/")
    checkers = {"ddpm-hf": check_ddpm_hf, "python": check_python, "python3": check_python,
                "accelerate": check_accelerate, "make": check_make, "pip": check_pip}
    if name not in checkers:
        checks.problems.append(f"`{program}`: no check knows this program; check it in tests/test_docs.py or put"
                               " `<!-- docs-test: skip: REASON -->` before the block")
        return
    checkers[name](args, checks)


def parsed(parse, argv, what: str, checks: Checks):
    """`parse(argv)`, or None with the parser's one-line refusal added to `checks.problems`."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            return parse(argv)
    except SystemExit as exit:
        refusal = (stderr.getvalue().strip().splitlines() or [f"exit {exit.code}"])[-1]
    except ValueError as error:  # a check that raises rather than exits (e.g. an unknown preset)
        refusal = str(error)
    checks.problems.append(f"{what} {shlex.join(argv)}: {refusal}")
    return None


def check_trainer(args, checks: Checks) -> None:
    from ddpm_hf.trainer.config import parse_args

    flags = parsed(parse_args, args, "the trainer refuses", checks)
    if flags is not None:
        checks.written.append(flags.output_dir)


@functools.cache
def setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


def check_ddpm_hf(args, checks: Checks, run: bool = True) -> None:
    if "ddpm-hf =" not in setup_cfg()["options.entry_points"]["console_scripts"]:
        checks.problems.append("setup.cfg declares no `ddpm-hf` console script")
    if args[:1] == ["train"]:
        checks.job("`ddpm-hf train` exists", ["ddpm-hf", "train", "--help"])
        check_trainer(args[1:], checks)
        return
    from ddpm_hf.cli import build_parser

    if parsed(build_parser().parse_args, args, "ddpm-hf refuses", checks) is not None and run and \
            args[0] in RUN_FOR_REAL:
        tiny = [*args, *TINY_FLAGS] if args[0] in SAMPLES else args  # the last of a repeated flag counts
        checks.job(f"runs: ddpm-hf {shlex.join(tiny)}", ["ddpm-hf", *tiny])


def check_python(args, checks: Checks, run: bool = True) -> None:
    if args[:1] == ["-m"]:
        module, rest = args[1], args[2:]
        if module == "ddpm_hf.cli":
            check_ddpm_hf(rest, checks, run=run)
        elif module == "pip":
            check_pip(rest, checks)
        elif module.startswith("benchmarks."):  # imported from the repository's root, in the runner
            checks.job(f"parses: python -m {shlex.join(args[1:])}", ["bench", module, *rest])
        elif module == "ddpm_hf.train":
            if importlib.util.find_spec(module) is None:
                checks.problems.append(f"python -m {module}: no such module")
            check_trainer(rest, checks)
        else:
            checks.problems.append(f"python -m {module}: no check knows this module (tests/test_docs.py)")
    elif args[:1] == ["training/train.py"]:
        check_trainer(args[1:], checks)
    else:
        checks.problems.append(f"python {shlex.join(args)}: no check knows this script; the benchmarks run as"
                               " modules (python -m benchmarks.NAME)")


def check_accelerate(args, checks: Checks) -> None:
    if args[:1] != ["launch"]:
        checks.problems.append(f"accelerate {shlex.join(args)}: only `accelerate launch` is checked")
        return
    from accelerate.commands.launch import launch_command_parser

    launch = parsed(launch_command_parser().parse_args, args[1:], "accelerate launch refuses", checks)
    if launch is None:
        return
    script = ["-m", launch.training_script] if launch.module else [launch.training_script]
    check_python([*script, *launch.training_script_args], checks, run=False)  # several processes: parse only


def check_make(args, checks: Checks) -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([A-Za-z][\w-]*):", makefile, re.M))
    variables = dict(re.findall(r"^([A-Z_]+) \?= ?(.*)$", makefile, re.M))
    given = dict(word.split("=", 1) for word in args if "=" in word)
    for target in [word for word in args if "=" not in word] or ["install"]:
        if target not in targets:
            checks.problems.append(f"make {target}: the Makefile has no such target ({', '.join(sorted(targets))})")
    checks.problems += [f"make {name}=...: the Makefile has no variable {name}" for name in given
                        if name not in variables and name != "ARGS"]
    if "train" in args:  # the Makefile's train recipe: --output_dir $(OUTPUT_DIR) $(ARGS)
        output_dir = given.get("OUTPUT_DIR", variables.get("OUTPUT_DIR"))
        check_trainer(["--output_dir", output_dir, *shlex.split(given.get("ARGS", ""))], checks)


def check_pip(args, checks: Checks) -> None:
    from packaging.requirements import Requirement
    from pip._internal.commands import create_command

    if args[:1] != ["install"]:
        checks.problems.append(f"pip {shlex.join(args)}: only `pip install` is checked")
        return
    parsed_install = parsed(create_command("install").parse_args, args[1:], "pip install refuses", checks)
    if parsed_install is None:
        return
    options, requirements = parsed_install
    extras = set(setup_cfg()["options.extras_require"])
    for editable in options.editables:
        if not (ROOT / editable / "setup.cfg").is_file():
            checks.problems.append(f"pip install -e {editable}: not this repository's root")
    for text in requirements:
        requirement = Requirement(text)
        if requirement.name == "ddpm-hf" and not requirement.extras <= extras:
            checks.problems.append(f"pip install {text}: setup.cfg has no extra {sorted(requirement.extras - extras)}"
                                   f" (it has {', '.join(sorted(extras))})")


# ----------------------------------------------------------------------------------------------------------------
# The runner: one interpreter, one fork per Python block, real command and benchmark parser
# ----------------------------------------------------------------------------------------------------------------
RUNNER_SETUP = f"""
import argparse, importlib, os, sys
import torch, diffusers, transformers  # the slow imports, once for every job
import ddpm_hf.cli, ddpm_hf.evaluation, ddpm_hf.pipeline_ddpm_hf, ddpm_hf.hub
torch.set_num_threads(1)
ROOT = {str(ROOT)!r}


class Parsed(BaseException):
    '''Raised once a benchmark's parser has read its flags: they parse, and nothing of the benchmark runs.'''


def parse_then_stop(parser, args=None, namespace=None):
    PARSE_ARGS(parser, args, namespace)
    raise Parsed


PARSE_ARGS = argparse.ArgumentParser.parse_args


def run_job(argv):
    kind, *rest = argv
    if kind == "python":  # a doc's Python block, as a script of its own
        path, label = rest
        with open(path, encoding="utf-8") as source:
            exec(compile(source.read(), label, "exec"), {{"__name__": "__main__"}})
        return 0
    if kind == "ddpm-hf":
        return ddpm_hf.cli.main(rest)
    module, *flags = rest  # a benchmark: `python -m benchmarks.NAME FLAGS` from the repository's root
    os.chdir(ROOT)
    sys.path.insert(0, ROOT)
    sys.argv = [module, *flags]
    argparse.ArgumentParser.parse_args = parse_then_stop
    benchmark = importlib.import_module(module)
    try:
        (getattr(benchmark, "parse_args", None) or benchmark.main)()
    except Parsed:
        return 0
    print(module + ": its parse_args() or main() never parsed the command line", file=sys.stderr)
    return 1
"""


def save_tiny_pipelines(folder: Path) -> None:
    """The pipelines the docs load, under their names, as tiny models: unconditional (with the samples.png a run
    leaves), class-conditional on the ten digits, text to image."""
    from ddpm_hf import DDPMImagePipeline, DDPMPosteriorScheduler

    DDPMImagePipeline(unet=tiny_unet(), scheduler=DDPMPosteriorScheduler()).save_pretrained(folder / "ddpm-digits")
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).save(folder / "ddpm-digits" / "samples.png")
    digits = [str(digit) for digit in range(10)]
    DDPMImagePipeline(unet=tiny_unet(num_class_embeds=len(digits) + 1), scheduler=DDPMPosteriorScheduler(),
                      class_names=digits).save_pretrained(folder / "ddpm-digits-class")
    tiny_text_to_image_pipeline(folder.parent / "clip-tokenizer").save_pretrained(folder / "ddpm-digits-text")


def plan(block: Block, snippets: Path) -> Checks:
    checks = Checks()
    if block.language == "python":
        code = block.code
        for pattern, tiny in TINY_PYTHON:
            code = pattern.sub(tiny, code)
        path = snippets / f"{len(list(snippets.iterdir()))}.py"
        path.write_text(code, encoding="utf-8")
        checks.job("runs", ["python", str(path), block.id])
        return checks
    for words in command_lines(block.code):
        check_command(words, checks)
    if not checks.problems and not checks.jobs and not command_lines(block.code):
        checks.problems.append("an empty shell block")
    return checks


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """{block id: its problems}, and what the docs' commands wrote, from one pass over every block."""
    base = tmp_path_factory.mktemp("docs")
    work, snippets, logs = base / "work", base / "snippets", base / "logs"
    for folder in (work, snippets, logs):
        folder.mkdir()
    save_tiny_pipelines(work)
    before = set(os.listdir(work))

    planned = {block.id: plan(block, snippets) for block in BLOCKS if not (block.skip or block.problem)}
    runs, owners = {}, {}  # the same command line in several blocks runs once
    for block_id, checks in planned.items():
        for what, argv in checks.jobs.items():
            name = next((name for name, known in runs.items() if known == argv), f"job{len(runs)}")
            runs[name] = argv
            owners.setdefault(name, []).append((block_id, what))
    with HubServer(token=HUB_TOKEN) as hub:
        env = dict(os.environ, HF_ENDPOINT=hub.url, HF_TOKEN=HUB_TOKEN, HF_HUB_OFFLINE="0",
                   HF_HOME=str(base / "hf-home"), DDPM_HF_CACHE=str(base / "cache"), OMP_NUM_THREADS="1",
                   HF_HUB_DISABLE_PROGRESS_BARS="1", DIFFUSERS_VERBOSITY="error", DDPM_HF_TRACEBACK="")
        codes = run_forked(fork_runner(RUNNER_SETUP, "run_job", "ddpm-hf"), runs, logs, cwd=work, env=env,
                           timeout=240)
    problems = {block_id: list(checks.problems) for block_id, checks in planned.items()}
    for name, code in codes.items():
        if code != 0:
            stderr = (logs / f"{name}.stderr").read_text(encoding="utf-8", errors="replace").strip()
            for block_id, what in owners[name]:
                problems[block_id].append(f"{what}: exit {code}\n{stderr[-1500:]}")
    written = sorted(set(os.listdir(work)) - before) + [path for checks in planned.values() for path in checks.written]
    return problems, written


# ----------------------------------------------------------------------------------------------------------------
# The tests
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_block_runs_or_parses_as_written(block, outcomes):
    assert block.problem is None, block.problem
    if block.skip:
        pytest.skip(f"{block.id}: {block.skip}")
    problems = outcomes[0][block.id]
    assert not problems, f"{block.id} ({block.language}):\n" + "\n".join(problems)


def test_every_block_is_checked_or_plain_text_and_every_marker_stands_before_one():
    """A block in another language (```console, ```py) would escape the checks: only plain ``` or ```text may."""
    problems = []
    for path in DOCS:
        blocks, orphans = extract_blocks(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
        problems += orphans + [f"{block.id}: ```{block.language} is not checked: write ```python, ```bash or ```text"
                               for block in blocks
                               if block.language not in ("python", *SHELL_LANGUAGES, "", "text")]
    assert not problems, "\n".join(problems)


def test_the_extraction_finds_blocks_and_refuses_an_unchecked_one():
    doc = "\n".join(["text", "```bash", "ddpm-hf sample p \\", "    --steps 3  # a comment", "```", "",
                     "<!-- docs-test: skip: needs a GPU -->", "```python", "import torch", "```",
                     "<!-- docs-test: skip -->", "```sh", "ls", "```", "```", "a map, not code", "```",
                     "<!-- docs-test: skip: before nothing -->", "prose"])
    blocks, orphans = extract_blocks(doc, "doc.md")
    assert [(b.line, b.language, b.skip) for b in blocks] == [(2, "bash", None), (8, "python", "needs a GPU"),
                                                              (12, "sh", ""), (15, "", None)]
    assert command_lines(blocks[0].code) == [["ddpm-hf", "sample", "p", "--steps", "3"]]
    assert blocks[2].problem and "skip: REASON" in blocks[2].problem
    assert orphans == ["doc.md:18: a docs-test marker must be the line right before a code block"]
    checks = Checks()
    check_command(["OMP_NUM_THREADS=1", "ls", "-l"], checks)
    assert len(checks.problems) == 1 and "docs-test: skip" in checks.problems[0]


def test_a_wrong_flag_is_found_without_running_anything():
    checks = Checks()
    for line in ["ddpm-hf sample ddpm-digits --stepz 20", "make train ARGS='--preset no-such-preset'",
                 "accelerate launch --num_processes 1 training/train.py --learning_rate -1",
                 "accelerate launch --no-such-flag -m ddpm_hf.cli sample x", "pip install 'ddpm-hf[no-such-extra]'",
                 "make no-such-target", "python benchmarks/bench_train.py"]:
        check_command(shlex.split(line), checks)
    assert len(checks.problems) == 7, "\n".join(checks.problems)
    assert not checks.jobs


def test_the_readme_serves_a_pip_user():
    """README.md is the package's long description on PyPI: `make` and `.venv/bin` only in its "From a clone" part."""
    sections = re.split(r"^(#+ .*)$", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.M)
    for heading, body in zip(["(top)", *sections[1::2]], sections[0::2]):
        if heading.strip("# ") != "From a clone":
            assert ".venv/bin" not in body and "make " not in body, f"README.md, {heading}: a clone's command"


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_and_images_resolve():
    problems = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            if not linked.exists():
                problems.append(f"{path.relative_to(ROOT)}: {target}: no such file")
            elif anchor and linked.suffix == ".md":
                anchors = {github_anchor(h) for h in re.findall(r"^#+ (.*)$", linked.read_text(encoding="utf-8"),
                                                                 re.M)}
                if anchor not in anchors:
                    problems.append(f"{path.relative_to(ROOT)}: {target}: no such heading")
    assert not problems, "\n".join(problems)


def test_gitignore_covers_what_the_docs_commands_write(outcomes):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and the repository")
    written = {path.strip("/") + "/" if "." not in Path(path).name else path for path in outcomes[1]}
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, input="\n".join(written),
                             capture_output=True, text=True).stdout.split()
    assert written, "the docs' commands wrote nothing: the check would prove nothing"
    assert not written - set(ignored), f"add to .gitignore: {sorted(written - set(ignored))}"
