//! Shared state for apiproxy. (Being written: see the shared-state issue.)
