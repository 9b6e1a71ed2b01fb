//! The OpenFlow port-number map (issue 3). Work in progress.
