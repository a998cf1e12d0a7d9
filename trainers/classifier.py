"""Train the domain classifier used as the FID/IS/KID feature network where Inception does not fit.

    python -m trainers.classifier --model_dir=runs/fmnist_classifier \
        [--steps=3000] [--batch_size=128] [--data_dir=/usr/share/datasets/fashion-mnist]

Trains on the train split through the project's Fashion-MNIST pipeline (32x32, [-1, 1], the GAN's
own input format), reports top-1 accuracy on the full test split, and saves the network as
``<model_dir>/classifier.keras`` + ``classifier.json`` (name "fashion_mnist_classifier"). Use it with
``python -m trainers.evaluate --feature_network=classifier:<model_dir>``.

Fashion-MNIST is the only data set it trains on; ``--dataset=fashion_mnist`` is accepted (older commands
pass it) and anything else is refused by name. ``--model_dir`` and ``--data_dir`` go through
``tf.io.gfile``: local paths, ``file:///...``, ``gs://...``.
"""
from absl import app, flags

FLAGS = flags.FLAGS
#: The one data set this trainer knows; it also names the classifier ("fashion_mnist_classifier").
DATASET = "fashion_mnist"

flags.DEFINE_string("dataset", DATASET, f"Data set the classifier is trained on and named after: only "
                    f"'{DATASET}' (the idx files in --data_dir) is supported.")
flags.register_validator(
    "dataset", lambda value: value == DATASET,
    message=f"only '{DATASET}' is supported: trainers.classifier trains the Fashion-MNIST classifier (idx files "
            "in --data_dir); other data sets need their own classifier, or an Inception feature network "
            "(trainers.evaluate --feature_network=savedmodel:<dir> or keras_inception:<weights.h5>)")
flags.DEFINE_string("model_dir", None, "Directory to write classifier.keras and classifier.json to "
                    "(a local path or a URI: file://, gs://, ...).")
flags.DEFINE_integer("steps", 3000, "Optimizer steps.", lower_bound=1)
flags.DEFINE_integer("batch_size", 128, "Training batch size.", lower_bound=1)
flags.DEFINE_float("learning_rate", 1e-3, "Peak AdamW learning rate (cosine-decayed to 0).", lower_bound=0)
flags.DEFINE_integer("width", 32, "Channels of the first stage (x2, x4 in the next two).", lower_bound=1)
flags.DEFINE_integer("feature_dim", 128, "Size of the `features` layer used for FID.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seeds weights and data order.")
flags.DEFINE_string("data_dir", None, "Directory of the Fashion-MNIST idx .gz files, a local path or a URI (default: "
                    "the installed /usr/share/datasets/fashion-mnist).")
flags.mark_flag_as_required("model_dir")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from sagan_tf.data import FASHION_MNIST_DIR
    from sagan_tf.run import files
    data_dir = FLAGS.data_dir or FASHION_MNIST_DIR
    if not files.isdir(data_dir):
        raise app.UsageError(f"--data_dir={data_dir} does not exist (apt-get install dataset-fashion-mnist "
                             "provides the idx files)")

    import keras
    import tensorflow as tf

    from sagan_tf.data import fashion_mnist_dataset
    from sagan_tf.data.fashion_mnist import split_arrays
    from sagan_tf.evaluation.classifier import build_classifier, save_classifier, train_classifier

    keras.utils.set_random_seed(FLAGS.seed)
    train_ds = fashion_mnist_dataset(FLAGS.batch_size, data_dir=data_dir, split="train", seed=FLAGS.seed)
    test_images, test_labels = split_arrays(data_dir, "test")
    test_ds = tf.data.Dataset.from_tensor_slices((test_images, test_labels)).batch(256)
    model = build_classifier(image_size=test_images.shape[1], image_channels=test_images.shape[-1],
                             num_classes=10, width=FLAGS.width, feature_dim=FLAGS.feature_dim)
    print(f"training {model.name} on {FLAGS.dataset} train for {FLAGS.steps} steps of {FLAGS.batch_size}",
          flush=True)
    accuracy = train_classifier(model, train_ds, test_ds, FLAGS.steps, learning_rate=FLAGS.learning_rate,
                                log_every=max(FLAGS.steps // 10, 1), log_fn=lambda line: print(line, flush=True))
    model_path, metadata_path = save_classifier(model, FLAGS.model_dir, test_accuracy=accuracy,
                                                dataset_name=FLAGS.dataset)
    print(f"test accuracy: {accuracy:.4f} ({len(test_labels)} {FLAGS.dataset} test images)")
    print(f"saved {model_path} and {metadata_path}; use --feature_network=classifier:{FLAGS.model_dir}")


if __name__ == "__main__":
    app.run(main)
