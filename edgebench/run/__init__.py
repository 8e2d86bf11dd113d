"""Running a sweep: spec -> plan -> session -> runner -> one worker subprocess per case."""
