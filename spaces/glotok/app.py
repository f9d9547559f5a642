"""The GloTok Space: the app of `glotok demo`, on the models named in glotok_space.json."""

import json
from pathlib import Path

from glotok_hf.demo import build_demo

settings = Path(__file__).with_name("glotok_space.json")
build_demo(**(json.loads(settings.read_text()) if settings.is_file() else {})).queue().launch()
