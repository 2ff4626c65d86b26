//! pam_adopt.so
