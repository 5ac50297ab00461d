"""softprompt: parameter-efficient soft prompt tuning of frozen Hugging Face models.

```python
import softprompt
model = softprompt.attach(backbone, method="ulpt", length=100, rank=2)
out = model(input_ids=ids, attention_mask=mask, labels=labels)   # out.loss, out.logits
model.save("my-prompt"); model = softprompt.load(backbone, "my-prompt")
metrics = softprompt.train(softprompt.TrainConfig(template="Review: {text}\nSentiment:", label_words="neg=negative,pos=positive",
                                                  output_dir="runs/reviews"), train_data=rows, validation_data=dev_rows)
```
"""

import importlib
from typing import TYPE_CHECKING

from .version import __version__

# Where each public name lives. They are imported on first use (PEP 562), so that `softprompt
# --help` and the commands that need no model (params, recipes, tasks) do not pay for importing
# transformers' modeling code, several seconds on a small machine.
_EXPORTS = {
    "export_embeds": "io", "export_peft": "io",
    "SoftPromptModel": "model", "attach": "model", "import_peft": "model", "load": "model",
    "METHODS": "prompts", "make_config": "prompts",
    "PromptBank": "bank",
    "TrainConfig": "config", "train": "train",
}

if TYPE_CHECKING:  # what static tools and IDEs see
    from .bank import PromptBank
    from .config import TrainConfig
    from .io import export_embeds, export_peft
    from .model import SoftPromptModel, attach, import_peft, load
    from .prompts import METHODS, make_config
    from .train import train

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'softprompt' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
