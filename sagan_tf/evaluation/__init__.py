"""Evaluation of generated samples: feature networks, reference statistics and FID/IS/KID/PR.

* :mod:`.metrics` -- the math (numpy, float64): FID, IS, KID, precision/recall.
* :mod:`.features` -- feature networks (Inception SavedModel, Keras InceptionV3, own classifier)
  and streaming images through them.
* :mod:`.reference_stats` -- cached (mu, sigma) of a real data set's features.
* :mod:`.classifier` -- the small domain classifier used where Inception does not fit.

Every number should be reported together with the feature network's ``name``.
"""
from sagan_tf.evaluation.classifier import (build_classifier, evaluate_classifier, load_classifier,
                                            save_classifier, train_classifier)
from sagan_tf.evaluation.features import (ClassifierFeatureNetwork, KerasInceptionV3FeatureNetwork,
                                          SavedModelFeatureNetwork, compute_features,
                                          iterate_features, load_feature_network, prepare_images)
from sagan_tf.evaluation.metrics import (GaussianStatsAccumulator, frechet_distance,
                                         frechet_distance_from_stats, inception_score,
                                         kernel_inception_distance, mean_and_covariance,
                                         precision_recall)
from sagan_tf.evaluation.reference_stats import (ReferenceStatsMismatchError,
                                                 compute_reference_stats,
                                                 load_or_compute_reference_stats,
                                                 load_reference_stats, save_reference_stats)
