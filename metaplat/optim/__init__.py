"""metaplat.optim"""
