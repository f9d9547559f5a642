# Copyright 2026 The glotok-hf authors. Licensed under the Apache License, Version 2.0.
"""`glotok push-space`: publish the Gradio demo of `glotok demo` as a Hugging Face Space."""

import argparse

EXAMPLES = """examples:
  glotok push-space user/glotok-demo                       # the embedded default pipeline, uploaded into the Space
  glotok push-space user/glotok-demo --pipeline user/glotok-imagenet --trust-remote-code
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "push-space",
        help="publish the Gradio demo as a Hugging Face Space",
        description="Create (or update) the Space REPO_ID with the app of `glotok demo`. Local pipeline and "
        "tokenizer folders are uploaded into the Space; Hub repo ids are loaded by the running Space. The token "
        "is the one of `hf auth login` (or $HF_TOKEN).",
        epilog=EXAMPLES,
    )
    parser.add_argument("repo_id", metavar="REPO_ID", help="the Space, owner/name")
    parser.add_argument("--pipeline", metavar="PATH_OR_REPO", help="default: the embedded default pipeline")
    parser.add_argument("--tokenizer", metavar="PATH_OR_REPO", help="tokenizer of the Tokenize tab")
    parser.add_argument("--trust-remote-code", action="store_true", help="the pipeline is a Hub-layout one")
    parser.add_argument("--requirement", help="pip line installing glotok-hf in the Space (default: this version)")
    parser.add_argument("--private", action="store_true", help="create the Space private")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..hub import push_space

    url = push_space(
        args.repo_id,
        args.pipeline,
        args.tokenizer,
        trust_remote_code=args.trust_remote_code,
        requirement=args.requirement,
        private=args.private or None,
    )
    print(f"Pushed the GloTok demo Space: {url}")
    return 0
