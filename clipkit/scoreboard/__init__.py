"""The method scoreboard: every method run on one bench of world tasks and scored by a CLIP that did not guide it.

Methods follow the world guide; the world judge and pixel checks a person would agree with (``checks``) read the
results, against a baseline without guidance measured in the same run. Task lists are fixed and versioned
(``tasks.TASKS_VERSION``), so boards from different commits compare.

    from clipkit.scoreboard import run_board, score_images
    board = run_board(quick=True)                    # bench/results/scoreboard.md + scoreboard-tasks.csv
    score_images(images, tasks_for("edit-prompt")[0])  # one task's reading of any images
"""

from clipkit.scoreboard.checks import ObjectReading, check_object, read_object, segment
from clipkit.scoreboard.score import (
    BUDGET,
    Board,
    ImageScore,
    RowScore,
    TaskScore,
    board_markdown,
    degraded_accuracy,
    load_judge,
    run_board,
    run_task,
    score_images,
    write_board,
)
from clipkit.scoreboard.tasks import ROWS, TASKS_VERSION, Row, Task, input_image, task_mask, tasks_for

__all__ = ["run_board", "run_task", "score_images", "degraded_accuracy", "board_markdown", "write_board",
           "load_judge", "Board", "RowScore", "TaskScore", "ImageScore", "BUDGET", "ROWS", "TASKS_VERSION", "Row",
           "Task", "tasks_for", "input_image", "task_mask", "read_object", "check_object", "segment",
           "ObjectReading"]
