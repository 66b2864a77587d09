"""Export of kdtf students: TFLite (LiteRT) with quantization, SavedModel.

Example:

>>> from kdtf import export
>>> report = export.tflite(student, "/tmp/student.tflite",
...                        quantization="int8",
...                        representative_data=x_train[:100],
...                        verify_data=x_test, verify_labels=y_test)
>>> print(report)  # doctest: +SKIP

An export whose top-1 agreement with the Keras model is below `min_agreement`
(by default 99.9% for float32, 99% for float16 and dynamic, 97% for int8)
raises `export.VerificationError` and is kept as `<name>.failed.tflite`, not
under the requested name.

>>> export.saved_model(student, "/tmp/student_savedmodel")  # doctest: +SKIP
"""

from kdtf.atomic import atomic_path
from kdtf.atomic import atomic_write_bytes
from kdtf.export.saved_model import saved_model
from kdtf.export.tflite import DEFAULT_MIN_AGREEMENT
from kdtf.export.tflite import QUANTIZATIONS
from kdtf.export.tflite import VerificationError
from kdtf.export.tflite import as_float32
from kdtf.export.tflite import failed_path
from kdtf.export.tflite import tflite
from kdtf.export.verify import ExportReport
from kdtf.export.verify import verify_tflite
