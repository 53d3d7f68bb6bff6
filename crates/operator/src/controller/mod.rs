//! The reconcile pipeline. Filled in by the controller work.
