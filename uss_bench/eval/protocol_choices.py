"""The values a protocol's metric options may take, importable without torch (protocols, `list protocols`)."""

AVERAGING = ("skip_absent", "absent_as_zero")  # mIoU over the classes present, or absent classes as 0
EXTRA_CLUSTER_PIXELS = ("error", "drop_before_matching")  # uss counts them as errors; STEGO drops them first
