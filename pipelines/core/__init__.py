"""Layer 1 of shardtrain: errors, seeding, hashing and file access; imports nothing above it."""
