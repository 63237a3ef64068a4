# Copyright 2026 The ddpm-hf authors. Apache-2.0.
"""What the tests share, one module per kind of thing; a test file imports what it uses from the module that holds it
(`from support.models import tiny_unet`), not out of conftest.py (pytest hooks and fixtures only) nor another test file.

    models       tiny UNets and a tiny text-to-image pipeline, built offline and deterministic for a seed
    processes    fresh Python processes: one at a time, or many command lines forked from one interpreter; free ports
    training     the trainer as a subprocess: its flags for tiny runs, launches, kills, and checks of what it wrote
    images       image files on disk for the data tests
    hub_server   a local Hub-compatible HTTP server for the real huggingface_hub client
    hub_clients  this process and fresh processes pointed at that server

`python -m pytest` imports it as the top-level package `support`: pytest puts tests/ (the folder of the rootdir
conftest.py, no __init__.py) at the front of sys.path, for every file and every xdist worker alike.
"""
