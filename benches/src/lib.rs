//! dataflow-benches: criterion benchmarks of the nodes against the live servers the test
//! harness starts (see `benches/README.md` for how to run them and the recorded figures).

#![warn(missing_docs)]
