"""metaplat.nn"""
