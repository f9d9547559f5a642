# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""`glotok demo`: serve the Gradio app of the Space (Generate and Tokenize tabs) locally."""

import argparse
import os

from ..utils import resolve_source

EXAMPLES = """examples:
  glotok demo                                   # the embedded default pipeline, offline, on http://127.0.0.1:7860
  glotok demo --pipeline user/glotok-imagenet --trust-remote-code --tokenizer path/to/tokenizer --port 8000
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="serve the Gradio demo (generate, tokenize) in the browser",
        description="Serve the GloTok Gradio app (needs `pip install glotok-hf[space]`). Without --pipeline it "
        "serves the pipeline embedded in the glotok-hf checkout.",
        epilog=EXAMPLES,
    )
    parser.add_argument("--pipeline", metavar="PATH_OR_REPO", help="pipeline folder or Hub repo id")
    parser.add_argument("--tokenizer", metavar="PATH_OR_REPO", help="tokenizer of the Tokenize tab (default: the "
                        "pipeline's): a GloTokModel folder or Hub repo id, or a pipeline")  # fmt: skip
    parser.add_argument("--trust-remote-code", action="store_true", help="run a Hub-layout pipeline's own code")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=7860, help="default: %(default)s")
    parser.add_argument("--share", choices=["true", "false"], default="false",
                        help="also serve through a public gradio.live link (default: false)")  # fmt: skip
    parser.add_argument("--device", help="torch device, e.g. cpu, cuda (default: cuda when available)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for source, flag in ((args.pipeline, "--pipeline"), (args.tokenizer, "--tokenizer")):
        if source is not None:
            resolve_source(source, flag)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no usage reports, no version checks
    try:
        from ..demo import build_demo
    except ImportError as err:
        raise ImportError(f"glotok demo needs gradio ({err}): pip install 'glotok-hf[space]'.") from err
    demo = build_demo(args.pipeline, args.tokenizer, device=args.device, trust_remote_code=args.trust_remote_code)
    demo.queue().launch(server_name=args.host, server_port=args.port, share=args.share == "true")
    return 0
