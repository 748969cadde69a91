"""metaplat.estimators"""
