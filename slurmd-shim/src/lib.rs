//! Test double for slurmd and slurmstepd.
