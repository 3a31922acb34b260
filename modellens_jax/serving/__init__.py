"""Serving from a bundle alone: the bundle format (``bundle``), the recommender
(``recommender``) and the commands over them (``recommend``, ``score``, ``http``, ``atlas``,
``loadtest``, ``bench``). Nothing here imports flax, orbax, grain or the training code."""
