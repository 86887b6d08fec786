"""Files: atomic directory writes, JSON reading with one-line errors, video (MP4) reading and writing."""
