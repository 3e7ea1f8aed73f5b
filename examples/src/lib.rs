//! Runnable examples of the Taskwarden SDK live beside this file: see `word_count.rs` and `fetch_gather.rs`.
