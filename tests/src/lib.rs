//! Helpers shared by the end-to-end tests: start lunard, find tools.
