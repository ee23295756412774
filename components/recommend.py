"""Recommend components: every user's top-K unseen items in original item ids, by shard."""

from typing import List  # noqa: UP035 - KFP reads the annotation of a collected input

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.images import image_uri


@dsl.component(base_image=image_uri("evaluate"), install_kfp_package=False)
def recommend(
    model: Input[Model],
    sequences: Input[Dataset],
    k: int,
    shard: int,
    scoring_shards: int,
    recommendations: Output[Dataset],
):
    """Write recommendations.parquet for one shard of the users.

    Columns user_id, rank (1 = best), item_id, score.

    Args:
        model: Output of the train component.
        sequences: Output of the sequences component.
        k: Items per user.
        shard: This task's shard, 0..scoring_shards - 1.
        scoring_shards: How many shards the users are split into.
        recommendations: Directory holding the shard's recommendations.parquet.
    """
    from sasrec.errors import exit_on_error
    from sasrec.serving.recommend import recommend_step

    with exit_on_error("recommend"):
        summary = recommend_step(
            model.path, sequences.path, recommendations.path, k, shard, scoring_shards
        )
    recommendations.metadata.update(summary)


@dsl.component(base_image=image_uri("evaluate"), install_kfp_package=False)
def merge_recommendations(
    shards: Input[List[Dataset]],  # noqa: UP006
    recommendations: Output[Dataset],
):
    """Join the shards' recommendations into one recommendations.parquet, in shard order.

    Args:
        shards: Every shard's output of the recommend component.
        recommendations: Directory holding recommendations.parquet: the rows one task
            scoring every user writes.
    """
    from sasrec.errors import exit_on_error
    from sasrec.serving.recommend import merge_recommendations as merge

    with exit_on_error("merge-recommendations"):
        summary = merge([shard.path for shard in shards], recommendations.path)
    recommendations.metadata.update(summary)
