"""softprompt: parameter-efficient soft prompt tuning of frozen Hugging Face models.

```python
import softprompt
model = softprompt.attach(backbone, method="ulpt", length=100, rank=2)
out = model(input_ids=ids, attention_mask=mask, labels=labels)   # out.loss, out.logits
model.save("my-prompt"); model = softprompt.load(backbone, "my-prompt")
```
"""

from .version import __version__  # noqa: E402

from .io import export_embeds, export_peft  # noqa: E402
from .model import SoftPromptModel, attach, import_peft, load  # noqa: E402
from .prompts import METHODS, make_config  # noqa: E402
from .bank import PromptBank  # noqa: E402

__all__ = ["METHODS", "PromptBank", "SoftPromptModel", "attach", "export_embeds", "export_peft", "import_peft", "load", "make_config", "__version__"]
