"""Human review: the rubric, the queue people work through, their judgements, agreement."""
