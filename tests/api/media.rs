//! Image uploads and media serving.
