//! The walker over thread and frame lists laid out by hand.
