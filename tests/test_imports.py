# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""The package's import structure: lazy public names, a light command line, and no import circles."""

import pkgutil
from pathlib import Path

from support.processes import run_python

import ddpm_hf


def all_modules():
    names = (info.name for info in pkgutil.walk_packages(ddpm_hf.__path__, "ddpm_hf."))
    return sorted(name for name in names if not name.endswith(".__main__"))  # __main__ runs the command


def test_import_ddpm_hf_imports_neither_torch_nor_diffusers():
    out = run_python("""
        import sys
        import ddpm_hf
        print(sorted(m for m in ("torch", "diffusers", "transformers", "accelerate") if m in sys.modules))
        print(ddpm_hf.__version__)
    """)
    assert out.splitlines() == ["[]", ddpm_hf.__version__]


def test_public_names_load_on_first_use_as_diffusers_looks_them_up():
    out = run_python("""
        import ddpm_hf
        from ddpm_hf import DDPMPosteriorScheduler
        pipeline_class = getattr(ddpm_hf, "DDPMImagePipeline")  # what diffusers' loader does
        from ddpm_hf.pipeline_ddpm_hf import DDPMImagePipeline
        assert pipeline_class is DDPMImagePipeline
        assert sorted(ddpm_hf.__all__) == sorted([*ddpm_hf._EXPORTS, "__version__"])  # one list, spelled twice
        assert set(ddpm_hf.__all__) <= set(dir(ddpm_hf))
        for name in ddpm_hf.__all__:
            getattr(ddpm_hf, name)
        try:
            ddpm_hf.NoSuchThing
        except AttributeError as error:
            print(error)
    """)
    assert out.strip() == "module 'ddpm_hf' has no attribute 'NoSuchThing'"


def test_cli_help_imports_neither_torch_nor_diffusers():
    out = run_python("""
        import contextlib, io, sys
        from ddpm_hf.cli import main
        for argv in (["--help"], ["sample", "--help"], ["forward", "--help"], ["nll", "--help"]):
            with contextlib.redirect_stdout(io.StringIO()) as text:
                try:
                    main(argv)
                except SystemExit as done:
                    assert done.code == 0, (argv, done.code)
            assert "usage: ddpm-hf" in text.getvalue(), argv
        print(sorted(m for m in ("torch", "diffusers") if m in sys.modules))
    """)
    assert out.strip() == "[]"


def test_every_module_imports_alone():
    """Each module imported first, in a fresh package state: an import circle fails here whatever the order."""
    modules = all_modules()
    assert "ddpm_hf.cli.nll" in modules and "ddpm_hf.scheduling_ddpm_posterior" in modules
    code = f"""
        import importlib, sys
        import torch, diffusers  # heavy and cycle-free: loaded once, kept
        for name in {modules!r}:
            for loaded in [m for m in sys.modules if m == "ddpm_hf" or m.startswith("ddpm_hf.")]:
                del sys.modules[loaded]
            importlib.import_module(name)
        print("ok")
    """
    assert run_python(code).strip() == "ok"


def test_the_import_paths_a_shipped_pipeline_file_names_resolve():
    """Every saved folder ships a pipeline_ddpm_hf.py whose guarded imports name these paths; with the package
    installed they must reach the same objects, or `variational_bound` and `push_to_hub` break there."""
    out = run_python("""
        import ddpm_hf, ddpm_hf.hub
        from ddpm_hf import variational_bound
        from ddpm_hf.hub import HUB_DOWNLOAD_KWARGS, push_pipeline_to_hub, resolve_pipeline_folder
        from ddpm_hf.diffusion.likelihood import variational_bound as home
        from ddpm_hf.hub.push import push_pipeline_to_hub as push_home
        from ddpm_hf.hub.resolve import resolve_pipeline_folder as resolve_home
        assert variational_bound is home is ddpm_hf.variational_bound
        assert push_pipeline_to_hub is push_home and resolve_pipeline_folder is resolve_home
        print("token" in HUB_DOWNLOAD_KWARGS)
    """)
    assert out.strip() == "True"


def test_one_line_keeps_every_line_of_a_message_and_names_an_empty_error():
    from ddpm_hf.errors import one_line

    message = OSError("Can't load the config.\n\n  Check the path.  ")
    assert one_line(message) == "Can't load the config. Check the path."
    assert one_line(KeyError()) == "KeyError"
    assert one_line("already one line") == "already one line"


def test_the_trainers_map_names_every_module_of_it():
    """ddpm_hf/trainer/__init__.py's docstring is the trainer's map: one line per module, none missing or stale."""
    import ddpm_hf.trainer

    folder = Path(ddpm_hf.trainer.__file__).parent
    modules = {path.stem for path in folder.glob("*.py")} - {"__init__"}
    mapped = {line.split()[0] for line in ddpm_hf.trainer.__doc__.splitlines() if line.startswith("    ")}
    assert mapped == modules
