"""Importable augmentation: ``shardtrain.augment.text`` (EDA, synonyms, nlpaug) and
``shardtrain.augment.image`` (albumentations pipelines, seeded batch ops). Neither imports
Ray or Lightning."""
