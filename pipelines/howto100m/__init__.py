"""The HowTo100M source layout: metadata CSV, caption.json (indexed, cleaned, clipped), video files,
and subset selection.

    metadata = read_metadata_csv("HowTo100M_v1.csv")
    captions = load_or_build_caption_index("caption.json", "caption_index.parquet")
    selection = select_subset(metadata, captions.ids(), SubsetConfig(subset="howto100m-380k"))
    files = index_video_files("videos/")
    segments, counts = clean_captions(captions.read_raw(video_id))
    segments = clip_captions(segments, duration_s)
"""

from pipelines.howto100m.caption_index import (
    CaptionIndex,
    StaleCaptionIndexError,
    build_caption_index,
    index_caption_stream,
    load_or_build_caption_index,
    parse_caption_record,
    read_caption_record,
)
from pipelines.howto100m.caption_scan import CaptionFileFormatError
from pipelines.howto100m.captions import (
    DROPPED_KINDS,
    REPAIRED_KINDS,
    CaptionError,
    CaptionSegments,
    clean_captions,
    clip_captions,
)
from pipelines.howto100m.ids import VIDEO_ID_PATTERN, is_safe_video_id
from pipelines.howto100m.metadata import VideoMetadata, read_metadata_csv, read_metadata_stream
from pipelines.howto100m.subset import (
    HOWTO100M_380K_CATEGORIES,
    SubsetConfig,
    SubsetSelection,
    read_id_list,
    select_subset,
)
from pipelines.howto100m.videos import (
    VIDEO_EXTENSIONS,
    VideoFileIndex,
    index_video_files,
    index_video_paths,
)

__all__ = [
    "DROPPED_KINDS",
    "HOWTO100M_380K_CATEGORIES",
    "REPAIRED_KINDS",
    "VIDEO_EXTENSIONS",
    "VIDEO_ID_PATTERN",
    "CaptionError",
    "CaptionFileFormatError",
    "CaptionIndex",
    "CaptionSegments",
    "StaleCaptionIndexError",
    "SubsetConfig",
    "SubsetSelection",
    "VideoFileIndex",
    "VideoMetadata",
    "build_caption_index",
    "clean_captions",
    "clip_captions",
    "index_caption_stream",
    "index_video_files",
    "index_video_paths",
    "is_safe_video_id",
    "load_or_build_caption_index",
    "parse_caption_record",
    "read_caption_record",
    "read_id_list",
    "read_metadata_csv",
    "read_metadata_stream",
    "select_subset",
]
