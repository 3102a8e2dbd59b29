"""The md5 of each decompressed IDX file of MNIST and Fashion-MNIST, for the extracted files torchvision leaves
beside its ``.gz`` files (torchvision publishes the md5s of the ``.gz`` files only).

Computed once from the ``.gz`` files whose md5s match torchvision's (``gzip -dc FILE | md5sum``), keyed like
:data:`scenarios.datasets.IDX_FILES`.
"""

from __future__ import annotations

IDX_RAW_MD5: dict[str, dict[str, str]] = {
    "MNIST": {
        "train_images": "6bbc9ace898e44ae57da46a324031adb",
        "train_labels": "a25bea736e30d166cdddb491f175f624",
        "test_images": "2646ac647ad5339dbf082846283269ea",
        "test_labels": "27ae3e4e09519cfbb04c329615203637",
    },
    "FashionMNIST": {
        "train_images": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train_labels": "9018921c3c673c538a1fc5bad174d6f9",
        "test_images": "8181f5470baa50b63fa0f6fddb340f0a",
        "test_labels": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}
