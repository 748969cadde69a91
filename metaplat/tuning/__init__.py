"""metaplat.tuning"""
