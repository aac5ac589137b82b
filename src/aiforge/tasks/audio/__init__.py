"""Audio tasks: speech recognition, audio classification, text-to-speech and text-to-music.

One module per concern:

* :mod:`.inputs`: the ``audio`` input the tasks share (decoded by :func:`aiforge.media.load_audio`);
* :mod:`.windows`: long audio cut into Whisper windows, decoded in batches and stitched back;
* :mod:`.whisper`: the two Whisper engines (faster-whisper / CTranslate2 and transformers);
* :mod:`.asr_types`: speech recognition's schemas, shared by the engines and the task;
* :mod:`.recognition`, :mod:`.classification`, :mod:`.synthesis`, :mod:`.music`: the four
  registered tasks; :mod:`.vad`: audio-classification's offline runtime (speech or not);
* :mod:`.transcripts`: the OpenAI transcription formats (json, text, srt, vtt, verbose_json).

Task discovery imports this package; the imports below run the tasks' ``@register_task`` decorators,
in the order ``aiforge tasks`` lists them. None of these modules imports torch at module level.
"""

# The import order is the registration order, hence the order `aiforge tasks` lists them in.
# isort: off
from aiforge.tasks.audio import recognition  # noqa: F401
from aiforge.tasks.audio import classification  # noqa: F401
from aiforge.tasks.audio import synthesis  # noqa: F401
from aiforge.tasks.audio import music  # noqa: F401
from aiforge.tasks.audio import vad  # noqa: F401
# isort: on
