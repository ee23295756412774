"""Recommend component: the top-K unseen items of every user, in original item ids."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.images import image_uri


@dsl.component(base_image=image_uri("evaluate"), install_kfp_package=False)
def recommend(
    model: Input[Model],
    sequences: Input[Dataset],
    k: int,
    recommendations: Output[Dataset],
):
    """Write recommendations.parquet: user_id, rank (1 = best), item_id, score.

    Args:
        model: Output of the train component.
        sequences: Output of the sequences component.
        k: Items per user.
        recommendations: Directory holding recommendations.parquet.
    """
    from sasrec.errors import exit_on_error
    from sasrec.serving.recommend import recommend_step

    with exit_on_error("recommend"):
        summary = recommend_step(model.path, sequences.path, recommendations.path, k)
    recommendations.metadata.update(summary)
