"""Draw the demo sample in this folder from the full shared data set (see README.md).

    python data/make_sample.py /work/shared/data data

Class-balanced: 3,000 rows per label from the train file, 500 per label from the test file, drawn
with pandas ``sample(random_state=20240601)`` per label, then shuffled with the same seed.
Rows are written verbatim (columns review,label,rating; UTF-8, LF, minimal quoting).
"""

import sys

import pandas as pd

SEED = 20240601
PER_LABEL = {"reviews_train.csv": 3000, "reviews_test.csv": 500}


def sample(src: str, per_label: int) -> pd.DataFrame:
    df = pd.read_csv(src, dtype={"review": str}, keep_default_na=False)
    parts = [g.sample(n=per_label, random_state=SEED) for _, g in df.groupby("label", sort=True)]
    return pd.concat(parts).sample(frac=1.0, random_state=SEED).reset_index(drop=True)


def main(src_dir: str, out_dir: str) -> None:
    for name, per_label in PER_LABEL.items():
        sample(f"{src_dir}/{name}", per_label).to_csv(f"{out_dir}/{name}", index=False, lineterminator="\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
